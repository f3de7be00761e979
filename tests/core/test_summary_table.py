"""The run summary's console table stays readable with many tenants."""

from pipelines.summary import format_table


def _tenant(windows: int, balanced: bool = True, quarantines: int = 0) -> dict:
    return {"head": "logistic", "windows_in": windows, "trained": windows, "duplicates": 0,
            "late": 0, "dead_letters": 0, "pending": 0, "snapshots": 0, "last_version": 0,
            "drift_p95": None, "quarantines": quarantines, "balanced": balanced}


def test_many_tenants_show_the_ones_that_need_a_look_and_say_how_many_are_left_out():
    tenants = {f"t{i:04d}": _tenant(10 + i % 7) for i in range(1000)}
    tenants["t0500"] = _tenant(3, balanced=False)
    tenants["t0700"] = _tenant(4, quarantines=1)
    tenants["t0900"] = _tenant(99)
    totals = {**_tenant(0), "balanced": False}
    lines = format_table({"tenants": tenants, "totals": totals}, max_rows=5).splitlines()
    names = [line.split()[0] for line in lines[1:-2]]
    assert {"t0500", "t0700", "t0900"} <= set(names)
    assert len(names) == 5 and names == sorted(names)
    assert lines[-2].startswith("... 995 more tenants, all balanced")
    assert lines[-1].startswith("TOTAL")


def test_a_few_tenants_are_all_shown():
    tenants = {f"t{i}": _tenant(5) for i in range(3)}
    lines = format_table({"tenants": tenants, "totals": _tenant(15)}).splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["t0", "t1", "t2", "TOTAL"]


def test_each_tenant_says_what_it_learns_and_a_classifier_shows_its_accuracy():
    tenants = {"clicks": {**_tenant(5), "head": "mlp_logistic",
                          "scores": {"accuracy": 0.875, "mae": 0.2}},
               "prices": {**_tenant(5), "head": "linear", "scores": {"mae": 1.5}}}
    lines = format_table({"tenants": tenants, "totals": _tenant(10)}).splitlines()
    cols = lines[0].split()
    rows = {line.split()[0]: dict(zip(cols, line.split())) for line in lines[1:-1]}
    assert rows["clicks"]["head"] == "mlp_logistic" and rows["clicks"]["accuracy"] == "0.875"
    assert rows["prices"]["head"] == "linear" and rows["prices"]["accuracy"] == "-"
    assert rows["prices"]["mae"] == "1.500"
