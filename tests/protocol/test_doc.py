"""docs/protocol.md carries the tables generated from the spec table, unchanged."""
from pathlib import Path

from protocol.doc import BEGIN, END, generate, splice

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_checked_in_protocol_doc_matches_the_spec_table():
    text = DOC.read_text()
    assert splice(text) == text, "docs/protocol.md is out of date: run python -m protocol.doc"


def test_generated_block_documents_every_field_rule_and_error_code():
    block = generate()
    assert block.startswith(BEGIN) and block.endswith(END)
    assert "| `lanes` | body | int, in [1, 4096] |" in block
    assert "| `x` | frame | tensor <f8/<f4, 2-D, finite |" in block
    assert "| `bad_sequence` |" in block and "Reply: `epoch_report` (or `error`)." in block
