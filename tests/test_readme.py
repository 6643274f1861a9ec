"""The README's path from `pip install` to a first fit, followed as written (the package is installed already)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path


from flamejax.cli import main
from tests.conftest import SHARED, requires_flame

README = Path(__file__).resolve().parents[1] / "README.md"


def first_fit_commands() -> list[list[str]]:
    text = README.read_text()
    block = text[text.index("<!-- first-fit"):text.index("<!-- /first-fit -->")]
    code = block.split("```bash", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#", 1)[0]) for line in code.splitlines() if line.split("#", 1)[0].strip()]


def test_the_block_is_what_this_test_expects():
    programs = [words[0] for words in first_fit_commands()]
    assert programs == ["pip", "flamejax", "cp", "flamejax", "flamejax"]


@requires_flame
def test_a_new_user_follows_the_readme_to_a_first_fit(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FLAMEJAX_WEIGHTS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    shutil.copyfile(SHARED / "images" / "ffhq_00000.png", work / "photo.jpg")
    user_folder = tmp_path / "data" / "flamejax"
    shared = Path(SHARED / "flame")
    stand_ins = {"generic_model.pkl": "flame_test_model.pkl"}  # the test model, under the official name

    for words in first_fit_commands():
        if words[0] == "pip":
            assert words[1] == "install"  # done: this test runs in the installed environment
        elif words[0] == "cp":
            destination = Path(words[-1].replace("~/.local/share/flamejax", str(user_folder)))
            assert destination == user_folder and destination.is_dir(), "`flamejax weights --create` made it"
            for name in words[1:-1]:
                shutil.copyfile(shared / stand_ins.get(name, name), destination / name)
        else:
            assert main(words[1:]) == 0, words
    out = capsys.readouterr()
    assert f"FLAME model {user_folder / 'generic_model.pkl'}" in out.err
    record = json.loads((work / "fits" / "photo.json").read_text())
    assert record["status"] == "ok"
    assert record["provenance"]["flame"]["path"] == str(user_folder / "generic_model.pkl")
    for suffix in (".npz", ".obj", ".glb", "_overlay.png"):
        assert (work / "fits" / f"photo{suffix}").is_file()
