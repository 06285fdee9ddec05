"""The bundled sentences and the reader for the user's own."""

import pytest

from gradinv.text import read_sentences, sentences


def test_the_bundled_corpus_is_pang_and_lee_s_two_hundred_labelled_sentences() -> None:
    # Execute
    texts, labels = sentences()
    # Assert: 100 negative then 100 positive in the file; Windows-1252 decoded (its em dash), whitespace normalised
    assert len(texts) == 200 and sorted(set(labels)) == [0, 1] and sum(labels) == 100
    assert any("\u2014" in t for t in texts) and all(t == " ".join(t.split()) for t in texts)
    assert "simplistic , silly and tedious ." in texts


def test_draws_are_seeded_and_without_replacement() -> None:
    # Execute
    a, la = sentences(n=10, seed=3)
    b, lb = sentences(n=10, seed=3)
    c, _ = sentences(n=10, seed=4)
    # Assert
    assert (a, la) == (b, lb) and a != c and len(set(a)) == 10
    with pytest.raises(ValueError, match="n must be"):
        sentences(n=201)
    with pytest.raises(ValueError, match="unknown corpus"):
        sentences("imdb")


def test_read_sentences_from_csv_text_and_folders(tmp_path) -> None:
    # Prepare
    (tmp_path / "a.csv").write_text('text,label\n"Hello,  world",1\nsecond one,0\n', encoding="utf-8")
    (tmp_path / "plain.txt").write_text("first line\n\n second   line \n", encoding="utf-8")
    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "x.txt").write_text("one\ntwo\n", encoding="utf-8")
    (folder / "y.txt").write_text("three\n", encoding="utf-8")
    # Execute / Assert
    assert read_sentences(tmp_path / "a.csv") == (["Hello, world", "second one"], [1, 0])
    assert read_sentences(tmp_path / "plain.txt") == (["first line", "second line"], [None, None])
    assert read_sentences(folder)[0] == ["one", "two", "three"]
    assert len(read_sentences(folder, n=2, seed=0)[0]) == 2


def test_bad_text_files_are_named(tmp_path) -> None:
    # Prepare
    (tmp_path / "nocol.csv").write_text("sentence\nhi\n", encoding="utf-8")
    (tmp_path / "badlabel.csv").write_text("text,label\nhi,pos\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    # Execute / Assert
    with pytest.raises(ValueError, match="'text' column"):
        read_sentences(tmp_path / "nocol.csv")
    with pytest.raises(ValueError, match="line 2: label must be an integer"):
        read_sentences(tmp_path / "badlabel.csv")
    with pytest.raises(ValueError, match="no sentences"):
        read_sentences(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError):
        read_sentences(tmp_path / "missing.csv")
