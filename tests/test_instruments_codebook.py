"""The codebook (markdown + xlsx) and the `instruments` / `codebook` commands."""

from __future__ import annotations

from pathlib import Path

import openpyxl
from typer.testing import CliRunner

from cohortflow.flows.commands_instruments import app
from cohortflow.instruments.codebook import codebook_tables, write_codebook
from cohortflow.instruments.registry import load_instruments

runner = CliRunner()


def test_codebook_covers_every_item_and_scale(tmp_path: Path):
    insts = load_instruments()
    md, xlsx = write_codebook(insts, tmp_path)
    text = md.read_text(encoding="utf-8")
    n_items = sum(len(i.items) for i in insts.values())
    n_scales = sum(len(i.scales) + len(i.classifications) for i in insts.values())
    wb = openpyxl.load_workbook(xlsx, read_only=True)
    assert set(wb.sheetnames) == {"instruments", "items", "scales", "cutoffs_bands"}
    assert wb["items"].max_row == n_items + 1 and wb["scales"].max_row == n_scales + 1
    for inst in insts.values():
        assert f"## {inst.code}:" in text
        for it in inst.items:
            assert f"| {inst.item_key(it.code)} |" in text
    t = codebook_tables(insts)
    sdq_items = t["items"][t["items"]["instrument"] == "sdq_parent"]
    assert sdq_items.loc[sdq_items["reversed"], "item"].tolist() == ["07", "11", "14", "21", "25"]
    peer = t["scales"].set_index("outcome").loc["sdq_parent.peer"]
    assert peer["missing_rule"] == "needs 3 of 5; mean x n; rounded half up"
    assert "normal 0-2, borderline 3-3, abnormal 4-10" in peer["bands"]
    ac = t["cutoffs_bands"].query("instrument == 'audit_c'")
    assert ac["when"].tolist() == ["male", "female"]
    cr = t["items"].set_index("item_key").loc["cries13_05", "responses"]
    assert "2=sometimes (scores 3)" in cr and "3=often (scores 5)" in cr


def test_cli_list_show_and_codebook(tmp_path: Path):
    res = runner.invoke(app, ["instruments", "list"])
    assert res.exit_code == 0, res.output
    assert "sdq_parent" in res.output and "cantril" in res.output
    res = runner.invoke(app, ["instruments", "show", "cantril"])
    assert res.exit_code == 0 and "now >= 7 and future >= 8" in res.output and "fingerprint" in res.output
    res = runner.invoke(app, ["instruments", "show", "obvl"])
    assert res.exit_code == 2 and "unknown instrument 'obvl'" in res.output
    res = runner.invoke(app, ["codebook", "--out", str(tmp_path / "cb")])
    assert res.exit_code == 0 and (tmp_path / "cb" / "codebook.xlsx").is_file()
