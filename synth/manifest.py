"""The manifest of a generated study: files written, faults injected, seed and factor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ManifestFile(BaseModel):
    """One export file: its path relative to out_dir, what it holds and how many data rows were written."""

    model_config = ConfigDict(extra="forbid")
    path: str
    arm: str
    site: str
    wave: str
    role: str
    format: str
    n_rows: int


class InjectedFault(BaseModel):
    """One injected fault. `row_numbers` are 1-based data rows (header not counted) of the written file
    that validation must quarantine; `column` the export column concerned; `details` extra facts."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    file: str
    row_numbers: list[int] = Field(default_factory=list)
    column: str | None = None
    description: str
    details: dict[str, Any] = Field(default_factory=dict)


class StudyManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    out_dir: Path
    seed: int
    factor: float
    files: list[ManifestFile]
    faults: list[InjectedFault] = Field(default_factory=list)
    households: dict[str, int] = Field(default_factory=dict, description="households per arm")
    persons: int = 0
    truth_file: str = "truth/truth.json"
    persons_file: str = "truth/persons.parquet"

    def file(self, path: str) -> ManifestFile:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(f"no file {path!r} in the manifest")

    def faults_of(self, kind: str) -> list[InjectedFault]:
        return [f for f in self.faults if f.kind == kind]

    def write(self, path: Path | None = None) -> Path:
        """Write as JSON (default out_dir/truth/manifest.json) and return the path."""
        path = path or self.out_dir / "truth" / "manifest.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> StudyManifest:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
