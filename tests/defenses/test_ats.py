"""ATS: each operation matches PIL (what the authors transform) on a real photograph, the policies are the paper's,
and the defended client's update is the update of its transformed images."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

import gradinv as gi
from gradinv.defenses import ats


def _photo(index: int, size: int) -> tuple[torch.Tensor, Image.Image]:
    image = gi.data.load("skimage", indices=[index], size=size)[0][0]
    levels = (image * 255).round()
    pil = Image.fromarray(levels.permute(1, 2, 0).numpy().astype(np.uint8))
    return levels, pil


@pytest.fixture(scope="module", params=[(1, 32), (3, 96)], ids=["cat-32", "rocket-96"])
def photo(request) -> tuple[torch.Tensor, Image.Image]:
    # the cat and the rocket: colour photographs whose grey mean differs from their channels' mean
    return _photo(*request.param)


def _tensor(pil: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(pil.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda x: ats.contrast(x, 1.33), lambda p: ImageEnhance.Contrast(p).enhance(1.33)),
        (lambda x: ats.contrast(x, 0.61), lambda p: ImageEnhance.Contrast(p).enhance(0.61)),
        (lambda x: ats.color(x, 0.72), lambda p: ImageEnhance.Color(p).enhance(0.72)),
        (lambda x: ats.brightness(x, 1.44), lambda p: ImageEnhance.Brightness(p).enhance(1.44)),
        (ats.autocontrast, ImageOps.autocontrast),
        (ats.equalize, ImageOps.equalize),
        (  # overexposed: many pixels in the top level, which PIL's equalisation step leaves out
            lambda x: ats.equalize(ats.brightness(x, 1.8)),
            lambda p: ImageOps.equalize(ImageEnhance.Brightness(p).enhance(1.8)),
        ),
        (ats.invert, ImageOps.invert),
        (lambda x: ats.solarize(x, 142.2), lambda p: ImageOps.solarize(p, 142.2)),
        (lambda x: ats.solarize(x, 128), lambda p: ImageOps.solarize(p, 128)),  # pixels at the threshold invert
        (lambda x: ats.posterize(x, 5), lambda p: ImageOps.posterize(p, 5)),
        (
            lambda x: ats.translate_x(x, 0.4079),
            lambda p: p.transform(p.size, Image.AFFINE, (1, 0, 0.4079 * p.size[0], 0, 1, 0)),
        ),
        (
            lambda x: ats.translate_x(x, -0.136),
            lambda p: p.transform(p.size, Image.AFFINE, (1, 0, -0.136 * p.size[0], 0, 1, 0)),
        ),
        (
            lambda x: ats.translate_y(x, 0.0906),
            lambda p: p.transform(p.size, Image.AFFINE, (1, 0, 0, 0, 1, 0.0906 * p.size[1])),
        ),
    ],
)
def test_point_and_shift_operations_equal_pil_exactly(photo, ours, theirs) -> None:
    levels, pil = photo
    assert torch.equal(ours(levels), _tensor(theirs(pil)))


def test_resampling_operations_follow_pil(photo) -> None:
    levels, pil = photo
    # sharpness: PIL's SMOOTH filter rounds its own way at a few pixels
    assert (ats.sharpness(levels, 1.3) - _tensor(ImageEnhance.Sharpness(pil).enhance(1.3))).abs().max() <= 1
    # rotation, nearest neighbour with grey fill, as the authors' rotate_with_fill
    rotated = pil.convert("RGBA").rotate(6.67)
    theirs = _tensor(Image.composite(rotated, Image.new("RGBA", rotated.size, (128,) * 4), rotated))
    assert (ats.rotate(levels, 6.67) != theirs).float().mean() < 0.02
    # shear, bicubic: torch's kernel (a = -0.75) against PIL's (a = -0.5)
    sheared = pil.transform(pil.size, Image.AFFINE, (1, 0, 0, 0.1, 1, 0), Image.BICUBIC)
    difference = (ats.shear_y(levels, 0.1) - _tensor(sheared)).abs()
    assert difference.mean() < 3 and float((difference > 12).float().mean()) < 0.02


def test_each_image_draws_its_own_signs() -> None:
    # translateX 9 moves the content by 41% of the width, left or right: the black band shows the sign
    images, labels = gi.data.load("skimage", n=12, size=32, seed=0)
    encoded, _ = ats.ATS(policy="3").encode(images, labels, generator=torch.Generator().manual_seed(0))
    black = (encoded == 0).all(dim=1).all(dim=1)  # (n, W): columns black over the whole height
    right, left = black[:, -1], black[:, 0]
    assert bool((right ^ left).all()) and 0 < int(right.sum()) < 12


def test_the_paper_policies_and_their_parsing() -> None:
    assert len(ats.POLICIES) == 50
    assert [ats.POLICIES[i] for i in (3, 1, 7)] == [("translateX", 9), ("contrast", 6), ("translateY", 2)]
    assert [ats.POLICIES[i] for i in (43, 18, 18)] == [("translateY", 3), ("contrast", 7), ("contrast", 7)]
    assert ats.RANGES["translateX"][9] == pytest.approx(150 / 331)
    assert ats.parse_policy("3-1-7+43-18-18") == [[3, 1, 7], [43, 18, 18]]
    for bad in ("", "3-x", "3-50", "-1"):
        with pytest.raises(ValueError, match="ATS"):
            ats.parse_policy(bad)
    with pytest.raises(ValueError, match="ATS"):
        gi.defenses.make("ats", policy="51")


def test_a_defended_client_shares_the_update_of_its_transformed_images() -> None:
    images, labels = gi.data.load("skimage", n=2, size=32, seed=0)
    model = gi.models.make("lenet", image_shape=(3, 32, 32), seed=0)
    defense = gi.defenses.make("ats", policy="3-1-7")
    obs = gi.observe(model, images, labels, defenses=[defense], seed=4)
    # the client's transformed batch, redrawn with the same generator stream, gives the observed update
    from gradinv.fl.client import encode_batch

    encoded, _ = encode_batch(images, labels, 10, [defense], seed=4)
    plain = gi.observe(model, encoded, labels)
    for name, value in obs.update.items():
        assert torch.allclose(value, plain.update[name], atol=1e-6)
    assert obs.defenses[0] == {"name": "ats", "policy": "3-1-7"}
    # the transform moved the photograph by about 41% of its width: the encoding is far from the image
    assert float(gi.metrics.psnr(encoded, images).max()) < 15.0
    # and a third of each encoding is the black fill of the horizontal shift
    assert all(float((e == 0).all(dim=0).float().mean()) > 0.3 for e in encoded)
