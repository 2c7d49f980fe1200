"""The agent file a CLI is pointed at: written when it does not hold the agent's text, left alone when
it does (rewriting it in place would wait for its last writeback between two children)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.prompt import write_agent_file


@pytest.fixture
def writes(monkeypatch) -> list[Path]:
    done: list[Path] = []
    real = Path.write_bytes
    monkeypatch.setattr(Path, "write_bytes", lambda p, data: done.append(p) or real(p, data))
    return done


def test_a_missing_agent_file_is_written(tmp_path, writes):
    path = tmp_path / "samocode-testing.agent.md"
    write_agent_file(path, "Тесты ✓\n")
    assert path.read_text(encoding="utf-8") == "Тесты ✓\n" and writes == [path]


def test_an_agent_file_holding_the_text_is_not_rewritten(tmp_path, writes):
    path = tmp_path / "a.agent.md"
    path.write_text("body\n", encoding="utf-8")
    write_agent_file(path, "body\n")
    assert writes == []


@pytest.mark.parametrize("old", ["bod\n", "BODY\n", "body\nmore\n", ""])  # shorter, same size, longer
def test_an_agent_file_holding_other_text_is_rewritten(tmp_path, writes, old):
    path = tmp_path / "a.agent.md"
    path.write_text(old, encoding="utf-8")
    write_agent_file(path, "body\n")
    assert path.read_text(encoding="utf-8") == "body\n" and writes == [path]


def test_a_directory_where_the_agent_file_goes_is_an_oserror(tmp_path):
    (tmp_path / "a.agent.md").mkdir()
    with pytest.raises(IsADirectoryError):
        write_agent_file(tmp_path / "a.agent.md", "body\n")
