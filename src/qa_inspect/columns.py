"""Column conversions the per-message stages share."""

from __future__ import annotations

import numpy as np
import pandas as pd


def coded_strings(s: pd.Series) -> tuple[list[str | None], np.ndarray, list[str | None]]:
    """(values, codes, distinct values) of a string column, each distinct value made a Python str
    once (``tolist`` makes one object per row, and chat columns repeat: conversation, shop, role,
    agent, quick-phrase texts). A missing value gets the last code, whose value is None."""
    codes, uniques = pd.factorize(s)
    lut = np.empty(len(uniques) + 1, dtype=object)
    lut[:-1] = uniques.to_numpy(dtype=object)  # (iterating an Arrow array was slower)
    lut[-1] = None  # code -1: missing
    codes = np.where(codes < 0, len(uniques), codes)
    return lut[codes].tolist(), codes, lut.tolist()
