"""The Azure LLM inference trace importer, on the real file and on small bad ones."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

from router.errors import InputError
from sim.errors import TraceError
from sim.traces.azure import AZURE_COLUMNS, import_azure
from sim.traces.synth import DEFAULT_MIX
from sim.traces.tasks import REQUIRED_COLUMNS, read_trace

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "traces" / "azure_code_2023.parquet"
HEADER = ",".join(AZURE_COLUMNS)


def load_regenerate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regenerate", REPO / "traces" / "regenerate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The public CSV lives outside the repository (../shared/data); the shipped
# conversion is checked without it, the conversion itself only where it is present.
AZURE_CSV: Path = load_regenerate().AZURE_CSV
needs_csv = pytest.mark.skipif(not AZURE_CSV.is_file(), reason=f"{AZURE_CSV} not present")


def write_csv(path: Path, *rows: str) -> Path:
    path.write_text(HEADER + "\n" + "".join(r + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------- the real trace


def check_real_trace(df: pl.DataFrame) -> None:
    assert df.schema == pl.Schema(REQUIRED_COLUMNS)
    assert df.height == 8_819
    assert df["arrival_s"][0] == 0.0
    assert df["arrival_s"].is_sorted()
    assert df["arrival_s"][-1] == pytest.approx(3_435.948056, abs=1e-6)  # 19:14:19.928016
    assert df["prompt_tokens"].median() == 1_469
    assert df["completion_tokens"].median() == 13
    assert df["task_id"][0] == "azure-000001"
    assert df["task_id"][-1] == "azure-008819"
    assert set(df["task_type"]) == set(DEFAULT_MIX)


def test_shipped_trace_matches_the_data_readme() -> None:
    check_real_trace(read_trace(SHIPPED))


@needs_csv
def test_import_real_trace() -> None:
    df = import_azure(AZURE_CSV, seed=0)
    check_real_trace(df)
    # First rows of the file: 18:17:03.9799600 4808 10, 18:17:04.0319600 3180 8.
    assert df.row(0) == ("azure-000001", 0.0, df["task_type"][0], 4_808, 10)
    assert df["arrival_s"][1] == pytest.approx(0.052, abs=1e-12)
    assert df["prompt_tokens"][1] == 3_180
    assert df["completion_tokens"][1] == 8


@needs_csv
def test_shipped_trace_is_what_the_importer_produces() -> None:
    assert read_trace(SHIPPED).equals(load_regenerate().build_azure(AZURE_CSV))


@needs_csv
def test_seed_and_limit() -> None:
    full = import_azure(AZURE_CSV, seed=0)
    assert import_azure(AZURE_CSV, seed=0).equals(full)
    other = import_azure(AZURE_CSV, seed=1)
    assert not other["task_type"].equals(full["task_type"])
    assert other.drop("task_type").equals(full.drop("task_type"))
    # Types are drawn in row order, so a limited import is a prefix of the full one.
    assert import_azure(AZURE_CSV, seed=0, limit=100).equals(full.head(100))
    only_sql = import_azure(AZURE_CSV, seed=0, limit=10, mix={"sql": 1.0})
    assert only_sql["task_type"].to_list() == ["sql"] * 10


# --------------------------------------------------------------------------- small files


def test_small_file_arrivals_are_relative_to_the_first_timestamp(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "a.csv",
        "2023-11-16 18:17:03.9799600,4808,10",
        "2023-11-16 18:17:04.0319600,3180,8",
        "2023-11-16 18:17:05.0000001,0,1",
        "2023-11-16 18:17:05,7,2",
    )
    df = import_azure(path, seed=0, mix={"json": 1.0})
    # Rows come out in time order; ids keep naming their CSV row (100 ns resolution).
    ids = ["azure-000001", "azure-000002", "azure-000004", "azure-000003"]
    assert df["task_id"].to_list() == ids
    assert df["arrival_s"].to_list() == pytest.approx([0.0, 0.052, 1.02004, 1.0200401], abs=1e-12)
    assert df["prompt_tokens"].to_list() == [4808, 3180, 7, 0]
    assert df["task_type"].to_list() == ["json"] * 4


@pytest.mark.parametrize(
    ("row", "column", "expected", "shown"),
    [
        (
            "yesterday,10,1",
            "TIMESTAMP",
            "a timestamp like '2023-11-16 18:17:03.9799600'",
            "'yesterday'",
        ),
        (",10,1", "TIMESTAMP", "a timestamp like '2023-11-16 18:17:03.9799600'", "a missing value"),
        ("2023-11-16 18:17:05.1,-10,1", "ContextTokens", "a non-negative integer", "'-10'"),
        ("2023-11-16 18:17:05.1,10.5,1", "ContextTokens", "a non-negative integer", "'10.5'"),
        (
            "2023-11-16 18:17:05.1,10,",
            "GeneratedTokens",
            "a non-negative integer",
            "a missing value",
        ),
        ("2023-11-16 18:17:05.1,10,lots", "GeneratedTokens", "a non-negative integer", "'lots'"),
    ],
)
def test_bad_rows_name_file_row_column(
    tmp_path: Path, row: str, column: str, expected: str, shown: str
) -> None:
    path = write_csv(
        tmp_path / "bad.csv",
        "2023-11-16 18:17:03.9799600,4808,10",
        "2023-11-16 18:17:04.0319600,3180,8",
        row,
    )
    with pytest.raises(TraceError) as excinfo:
        import_azure(path, seed=0)
    assert (
        str(excinfo.value) == f"{path}: row 3, column '{column}': expected {expected}, got {shown}"
    )


def test_bad_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header_only = write_csv(tmp_path / "header.csv")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("time,prompt\n1,2\n")
    ragged = write_csv(tmp_path / "ragged.csv", "2023-11-16 18:17:03.9,1,1", "x,1,1,1,1")
    cases = {
        empty: f"{empty}: empty file (no header, no rows)",
        header_only: f"{header_only}: empty trace (no rows)",
        wrong: (
            f"{wrong}: missing Azure trace column(s) 'TIMESTAMP', 'ContextTokens', "
            "'GeneratedTokens' (found: time, prompt)"
        ),
        tmp_path / "absent.csv": f"{tmp_path / 'absent.csv'}: Azure trace file does not exist",
    }
    for path, expected in cases.items():
        with pytest.raises(TraceError) as excinfo:
            import_azure(path, seed=0)
        assert str(excinfo.value) == expected
    with pytest.raises(TraceError) as excinfo:
        import_azure(ragged, seed=0)
    assert str(excinfo.value).startswith(f"{ragged}: not a readable CSV file (")
    assert isinstance(excinfo.value.__cause__, pl.exceptions.PolarsError)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"limit": 0}, "limit: expected None or an integer >= 1, got 0"),
        ({"limit": True}, "limit: expected None or an integer >= 1, got True"),
        ({"mix": {}}, "mix: expected at least one task type, got an empty mix"),
        ({"seed": -3}, "seed: expected an integer >= 0 or a numpy Generator, got -3"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], expected: str) -> None:
    path = write_csv(tmp_path / "a.csv", "2023-11-16 18:17:03.9799600,4808,10")
    arguments: dict[str, object] = {"seed": 0, **kwargs}
    with pytest.raises(InputError) as excinfo:
        import_azure(path, **arguments)  # type: ignore[arg-type]
    assert str(excinfo.value) == expected
