from bench.results import RunStore


def _rows(item, n=3):
    return [{"item": item, "method": "im2s", "transform": "identity", "seed": 1, "metric": f"m{i}",
             "value": float(i), "status": "ok"} for i in range(n)]


def test_results_are_appended_and_read_back(tmp_path):
    store = RunStore(tmp_path / "r")
    store.add_batch(_rows("a"), [], None, [])
    store.add_batch(_rows("b"), [], None, [])
    text = (tmp_path / "r" / "results.csv").read_text()
    assert text.count("item,method") == 1 and text.count("\n") == 1 + 6
    again = RunStore(tmp_path / "r")
    assert again.done("a", "im2s", "identity") and again.done("b", "im2s", "identity")
    assert len(again.results.rows) == 6


def test_a_torn_last_line_is_dropped_on_resume(tmp_path):
    store = RunStore(tmp_path / "r")
    store.add_batch(_rows("a"), [], None, [])
    path = tmp_path / "r" / "results.csv"
    with path.open("a") as fh:
        fh.write("b,im2s,identity,1,m0,0.")  # a kill in the middle of the next append
    again = RunStore(tmp_path / "r")
    assert not again.done("b", "im2s", "identity") and len(again.results.rows) == 3
    again.add_batch(_rows("b"), [], None, [])
    final = RunStore(tmp_path / "r")
    assert len(final.results.rows) == 6 and final.done("b", "im2s", "identity")


def test_a_failure_message_with_a_newline_stays_on_one_line(tmp_path):
    store = RunStore(tmp_path / "r")
    rows = _rows("a", 1)
    rows[0] |= {"status": "failed: out of memory\nsecond line", "value": float("nan")}
    store.add_batch(rows, [], None, [])
    assert (tmp_path / "r" / "results.csv").read_text().count("\n") == 2
    assert RunStore(tmp_path / "r").results.rows[0]["status"] == "failed: out of memory second line"
