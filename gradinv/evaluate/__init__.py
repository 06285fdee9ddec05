"""Evaluation: utility (accuracy under a defense), the attack x defense x setting grid, its results and cost."""

from gradinv.evaluate.grid import Cell, Grid, GridError, load_grid
from gradinv.evaluate.runner import evaluate
from gradinv.evaluate.store import Store
from gradinv.evaluate.utility import Utility, accuracy, pretrain, utility

__all__ = ["Cell", "Grid", "GridError", "Store", "Utility", "accuracy", "evaluate", "load_grid", "pretrain", "utility"]
