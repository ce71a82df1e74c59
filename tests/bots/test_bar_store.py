"""The keeper's bar store: finished bars only appended, never rewritten, kept across restarts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from offchain.bots.bar_store import BarStore

H = 3600


def test_append__only_bars_newer_than_the_last_are_added():
    store = BarStore()
    assert store.last_open_time(1) is None
    assert store.append(1, [0, H, 2 * H], [1.0, 2.0, 3.0]) == 3
    assert store.append(1, [H, 2 * H, 3 * H], [9.0, 9.0, 4.0]) == 1  # older bars ignored
    t, c, v = store.bars(1)
    assert t.tolist() == [0, H, 2 * H, 3 * H] and c.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert np.isnan(v).all()
    assert store.count(2) == 0  # markets are separate


def test_seed__fills_history_without_overwriting_stored_bars():
    store = BarStore()
    store.append(1, [5 * H], [50.0])
    assert store.seed(1, np.arange(7) * H, np.arange(7, dtype=float) + 1) == 6
    t, c, _ = store.bars(1)
    assert t.tolist() == [i * H for i in range(7)]
    assert c[5] == 50.0  # the stored bar won


def test_persisted__a_new_store_on_the_same_file_sees_every_bar(tmp_path):
    path = tmp_path / "state" / "bars.sqlite"
    first = BarStore(path)
    first.append(3, [0, H], [10.0, 11.0], vol_index=[None, 65.5])
    first.close()
    again = BarStore(path)
    t, c, v = again.bars(3)
    assert t.tolist() == [0, H] and c.tolist() == [10.0, 11.0]
    assert math.isnan(v[0]) and v[1] == 65.5


def test_append__refuses_an_unusable_close_and_keeps_nothing_of_the_batch():
    store = BarStore()
    with pytest.raises(ValueError, match="unusable close nan"):
        store.append(1, [0, H], [1.0, float("nan")])
    assert store.count(1) == 0
    with pytest.raises(ValueError, match="unusable volatility index"):
        store.set_vol_index(1, 0, -1.0)


def test_bar_store__an_unopenable_path_is_a_clean_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot be opened"):
        BarStore(blocker / "bars.sqlite")
