"""vtcore.state: the persisted selection survives a restart; a bad file never locks the user out;
uploads are kept in the workspace under safe names."""

import json

import pytest

from vtapp import state
from vtcore.errors import VTError


def test_state_round_trips_through_the_workspace(workspace):
    assert state.load_state() == state.AppState()
    sel = {"source": "trial", "k": 4096, "study": "s1", "trial": 7, "coverage": 0.97}
    state.update_state(counts_path="/x/c.npz", alpha=0.3, selected=sel)
    again = state.load_state()          # what a restarted server reads
    assert again.counts_path == "/x/c.npz" and again.alpha == 0.3 and again.selected == sel
    assert json.loads(state.state_path().read_text())["format"] == state.FORMAT
    assert again.updated


def test_unknown_fields_are_ignored_on_load_and_refused_on_update(workspace):
    path = state.state_path()
    path.write_text(json.dumps({"alpha": 0.8, "from_a_newer_version": 1}))
    assert state.load_state().alpha == 0.8
    with pytest.raises(VTError, match="unknown state field"):
        state.update_state(nope=1)


def test_a_corrupt_state_file_is_moved_aside_not_deleted(workspace):
    path = state.state_path()
    path.write_text("{ half a file")
    assert state.load_state() == state.AppState()
    aside = list(path.parent.glob("state.json.bad-*"))
    assert len(aside) == 1 and aside[0].read_text() == "{ half a file"
    state.update_state(alpha=0.1)
    assert state.load_state().alpha == 0.1


def test_uploads_are_kept_once_under_a_safe_name(workspace):
    p = state.save_upload("../../etc/my data.jsonl", b'{"text": "x"}\n')
    assert p.parent == state.subdir("uploads") and p.name.endswith("-my_data.jsonl")
    assert state.upload_label(p) == "my_data.jsonl"
    assert state.upload_domain(p) == "my_data"   # the domain it counts as: no hash prefix, no extension
    assert state.upload_domain("/ws/uploads/0123456789ab-py.docs.jsonl.gz") == "py"
    assert state.upload_domain("samples/code.jsonl") is None   # not an upload: it names its own
    assert state.save_upload("my data.jsonl", b'{"text": "x"}\n') == p   # same bytes: stored once
    other = state.save_upload("my data.jsonl", b'{"text": "y"}\n')
    assert other != p and len(state.list_uploads()) == 2
    with pytest.raises(VTError, match="empty"):
        state.save_upload("empty.jsonl", b"")
    cfg = state.save_upload("config.json", b"{}", folder="configs")
    assert state.list_uploads(folder="configs") == [cfg]
