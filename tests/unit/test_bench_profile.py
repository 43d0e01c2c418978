"""Reading the profilers' output: py-spy's collapsed stacks and perf's symbol report."""

from __future__ import annotations

from loadtest.bench.profile import hot_functions, postgres_hot_functions

PERF_REPORT = """\
# To display the perf.data header info, please use --header/--header-only options.
#
# Total Lost Samples: 0
#
# Overhead  Symbol
# ........  ..........................
#
     3.80%  [.] nocachegetattr
     2.40%  [.] _bt_compare
     0.87%  [k] copy_folio_from_iter_atomic
     0.20%  [.] AllocSetReset


#
# (Cannot load tips.txt file, please install perf!)
#
"""


def test_perf_symbols_in_report_order_with_their_share() -> None:
    assert postgres_hot_functions(PERF_REPORT) == [
        (3.8, "nocachegetattr"),
        (2.4, "_bt_compare"),
        (0.87, "copy_folio_from_iter_atomic"),
        (0.2, "AllocSetReset"),
    ]
    assert postgres_hot_functions(PERF_REPORT, top=2) == [
        (3.8, "nocachegetattr"),
        (2.4, "_bt_compare"),
    ]


def test_an_empty_report_has_no_hot_functions() -> None:
    assert postgres_hot_functions("# Samples: 0\n#\n") == []


def test_collapsed_stacks_count_own_and_total_samples() -> None:
    collapsed = (
        "run (a/loop.py:10);fold (a/fold.py:3);decode (a/codec.py:7) 6\n"
        "run (a/loop.py:10);fold (a/fold.py:4) 3\n"
        "run (a/loop.py:11) 1\n"
        "not a stack line\n"
    )
    samples, ranked = hot_functions(collapsed)
    assert samples == 10
    by_name = {f.name: (f.own, f.total) for f in ranked}
    assert by_name == {
        "decode (a/codec.py)": (6, 6),
        "fold (a/fold.py)": (3, 9),
        "run (a/loop.py)": (1, 10),
    }
    assert ranked[0].name == "decode (a/codec.py)"
