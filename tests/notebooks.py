"""Running a notebook of ``notebooks/`` top to bottom in a fresh kernel, for the e2e tier."""

from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def outputs_of(notebook) -> list[dict]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def printed_by(notebook) -> str:
    return "".join(o.get("text", "") for o in outputs_of(notebook))


def images_in(notebook) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs_of(notebook))


def execute(name: str, folder: Path, timeout: int = 1200):
    """Execute notebooks/NAME in ``folder`` (a fresh kernel, which inherits the environment) and
    return it with its outputs; fails on any cell that raised."""
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}}).execute()
    errors = [o for o in outputs_of(notebook) if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue")
    return notebook
