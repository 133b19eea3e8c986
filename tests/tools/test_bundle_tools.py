"""``tools.bundle``: the Model Zoo checks, the shared-block drift check and export for another site."""

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from tests.helpers import BUNDLES, REPO, site_key
from tools.bundle import blocks
from tools.bundle.export import collection_bundles, common_version, export, sha256, verify
from tools.bundle.export import main as export_main
from tools.bundle.verify import run_checks


def test_verifier_reports_a_version_without_changelog(tmp_path):
    bundle = tmp_path / "b"
    (bundle / "configs").mkdir(parents=True)
    meta = json.loads((REPO / "bundles" / "kdnet_brats_mri" / "configs" / "metadata.json").read_text())
    meta["version"] = "9.9.9"
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    results = dict(run_checks(str(bundle)))
    missing = "missing ['LICENSE', 'configs/inference.json', 'models/model.pt', 'docs/README.md']"
    assert missing in results["required files"]
    assert "version '9.9.9' has no changelog entry" in results["version in changelog"]


OWN_NETWORKS = """import torch


class Tiny(torch.nn.Conv2d):
    def __init__(self):
        super().__init__(1, 2, 1)


class ScaledByItsInput(Tiny):
    \"\"\"Reads its input's mean as a Python number (a trace keeps its example's), in a generator
    expression, which TorchScript cannot script.\"\"\"

    def forward(self, x):
        return super().forward(x) * sum(float(v) for v in [x.mean()])
"""


def own_network_bundle(root: Path, network: str, requires: bool = True) -> Path:
    """A bundle whose ``inference.json`` builds ``scripts.net.<network>`` (``OWN_NETWORKS``), with
    ``models/model.pt`` and a 32 x 32 sliding window."""
    bundle = root / "own_network"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "scripts").mkdir()
    (bundle / "scripts" / "__init__.py").write_text("")
    (bundle / "scripts" / "net.py").write_text(OWN_NETWORKS)
    shutil.copy(BUNDLES / "hlfd_tumour_ct" / "configs" / "metadata.json", bundle / "configs")
    inference = {
        "imports": ["$import os", "$import sys"],
        "bundle_root": ".",
        "bundle_on_path": "$sys.path.insert(0, os.path.abspath(@bundle_root))",
        "network_def": {"_target_": f"scripts.net.{network}"} | ({"_requires_": "@bundle_on_path"} if requires else {}),
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32]},
    }
    (bundle / "configs" / "inference.json").write_text(json.dumps(inference))
    torch.save(torch.nn.Conv2d(1, 2, 1).state_dict(), bundle / "models" / "model.pt")
    return bundle


@pytest.mark.parametrize("requires", [False, True])
def test_the_zoo_s_calls_find_a_bundle_s_own_network_only_if_its_config_puts_it_on_the_path(tmp_path, requires):
    """The Model Zoo's CI parses ``network_def`` without running the config's ``initialize``: a
    network from the bundle's ``scripts/`` is found only through ``_requires_`` of the id that puts
    the bundle on ``sys.path``. The checks must not find it for the bundle."""
    bundle = own_network_bundle(tmp_path, "Tiny", requires)
    result = dict(run_checks(str(bundle)))["verify_net_in_out"]
    if requires:
        assert result is None
    else:
        assert "Cannot locate class or function path: 'scripts.net.Tiny'" in result


def test_exports_of_a_network_that_a_trace_freezes_are_refused_and_leave_no_file(tmp_path):
    from tools.bundle.export_onnx import export as export_onnx

    fine = own_network_bundle(tmp_path / "fine", "Tiny")
    assert export_onnx(fine, [], {}, tmp_path / "fine.onnx", atol=1e-3)[0].is_file()
    frozen = own_network_bundle(tmp_path / "frozen", "ScaledByItsInput")
    with pytest.raises(ValueError, match="matches PyTorch on the input it was traced with but not on another"):
        export_onnx(frozen, [], {}, tmp_path / "frozen.onnx", atol=1e-3)
    assert not list(tmp_path.glob("frozen.onnx*"))
    refusal = dict(run_checks(str(frozen)))["ckpt_export + torch.jit.load"]
    assert "differs from the network on an input other than its example" in refusal


def fake_bundle(root: Path, config_extra: dict | None = None) -> Path:
    bundle = root / "tiny_bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "docs").mkdir()
    (bundle / "models" / "teacher").mkdir(parents=True)
    (bundle / "runs").mkdir()
    (bundle / "LICENSE").write_text("licence\n")
    (bundle / "scripts").mkdir()
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "1.2.3"}))
    (bundle / "configs" / "train.json").write_text(json.dumps({"bundle_root": "bundles/x", **(config_extra or {})}))
    (bundle / "configs" / "inference.json").write_text(json.dumps({"bundle_root": "."}))
    (bundle / "scripts" / "__init__.py").write_text('"""this bundle\'s own code"""\n')
    (bundle / "docs" / "README.md").write_text("# tiny\n")
    (bundle / "models" / "model.pt").write_bytes(b"student")
    (bundle / "models" / "teacher" / "model.pt").write_bytes(b"teacher")
    (bundle / "runs" / "checkpoint.pt").write_bytes(b"not shipped")
    return bundle


def test_export_is_deterministic_self_contained_and_verify_refuses_altered_zips(tmp_path, capsys):
    bundle = fake_bundle(tmp_path)
    first, second = export(bundle, tmp_path / "a"), export(bundle, tmp_path / "b")
    assert first.name == "tiny_bundle_v1.2.3.zip" and first.read_bytes() == second.read_bytes()
    assert verify(first) == []
    with zipfile.ZipFile(first) as archive:
        names = set(archive.namelist())
        assert json.loads(archive.read("tiny_bundle/configs/train.json"))["bundle_root"] == "."
        metadata = json.loads(archive.read("tiny_bundle/configs/metadata.json"))
        manifest = archive.read("tiny_bundle/MANIFEST.sha256").decode()
    vendored = {
        "tiny_bundle/common/__init__.py",
        "tiny_bundle/common/losses/composite.py",
        "tiny_bundle/scripts/__init__.py",
    }
    assert {"tiny_bundle/models/teacher/model.pt"} | vendored <= names
    assert not any("runs/" in n for n in names) and "models/model.pt" in manifest
    version = common_version()
    assert metadata["vendored_packages"] == {"common": version}
    assert manifest.splitlines()[0] == f"# tiny_bundle 1.2.3, vendored common {version}"
    with zipfile.ZipFile(export(bundle, tmp_path / "c", with_teacher=False)) as archive:
        assert "tiny_bundle/models/model.pt" in archive.namelist()
        assert not any("models/teacher" in n for n in archive.namelist())
    # a config altered inside the zip (and the zip's checksum recomputed) is still caught by the manifest
    altered = tmp_path / "altered.zip"
    with zipfile.ZipFile(first) as src, zipfile.ZipFile(altered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b" " if item.filename.endswith("inference.json") else data)
    Path(f"{altered}.sha256").write_text(f"{sha256(altered.read_bytes())}  altered.zip\n")
    assert verify(altered) == ["altered: configs/inference.json"]
    damaged = bytearray(first.read_bytes())
    damaged[len(damaged) // 3] ^= 0xFF  # one byte damaged in transit
    first.write_bytes(bytes(damaged))
    assert "differs from tiny_bundle_v1.2.3.zip.sha256" in verify(first)[0]
    Path(f"{second}.sha256").unlink()
    assert verify(second) == ["no checksum file tiny_bundle_v1.2.3.zip.sha256 next to the zip"]
    with pytest.raises(SystemExit) as exit_code:
        export_main(["verify", str(altered)])
    assert exit_code.value.code == 1
    out = capsys.readouterr().out
    assert "REFUSED" in out and "altered: configs/inference.json" in out


def test_export_refuses_configs_with_this_machines_paths(tmp_path):
    bundle = fake_bundle(tmp_path, {"dataset_dir": str(tmp_path / "data"), "other": "/workspace/data/x"})
    with pytest.raises(ValueError, match="holds absolute paths of this machine"):
        export(bundle, tmp_path / "out")


def test_common_is_vendored_with_its_single_sourced_version():
    import common

    assert common_version() == common.__version__
    assert [b.name for b in collection_bundles()] == sorted(
        b.name for b in BUNDLES.iterdir() if not b.name.startswith("_")
    )


def test_every_bundle_carries_the_shared_blocks_unchanged():
    bundles = blocks.bundles_in(REPO)
    assert "_template_kd" in {b.name for b in bundles} and len(bundles) == 5
    assert {b.name: blocks.drift(b) for b in bundles} == {b.name: [] for b in bundles}


def test_the_drift_check_names_each_hand_edited_copy_and_the_sync_restores_them(tmp_path, capsys):
    bundle = tmp_path / "bundles" / "kdnet_brats_mri"
    shutil.copytree(BUNDLES / "kdnet_brats_mri", bundle, ignore=shutil.ignore_patterns("models", "docs"))
    configs = bundle / "configs"
    overlay = configs / "multi_gpu_train.json"
    overlay.write_text(overlay.read_text().replace("dist.barrier()", "True"))
    train = json.loads((configs / "train.json").read_text())
    train["common_package"] = "$'common'"
    train["initialize"] = train["initialize"][1:]  # the bundle folder no longer put on sys.path first
    del train["train"]["log_handlers"]
    (configs / "train.json").write_text(json.dumps(train))
    inference = json.loads((configs / "inference.json").read_text())
    inference["image_path_guard"]["hide"].pop()
    (configs / "inference.json").write_text(json.dumps(inference))
    problems = blocks.drift(bundle)
    assert f"{overlay} differs from {blocks.BLOCKS / 'multi_gpu_train.json'}" in problems
    assert any("train.json: id 'common_package' differs" in p for p in problems)
    assert any("train.json: id 'initialize' differs" in p for p in problems)
    assert any("inference.json: id 'image_path_guard' differs" in p for p in problems)
    assert any("no id 'train#log_handlers', which" in p and "multi_gpu_train.json refers to" in p for p in problems)
    assert len(problems) == 5
    with pytest.raises(SystemExit, match="5 problem"):
        blocks.main(["--check", str(bundle)])
    blocks.sync(bundle)
    assert [p for p in blocks.drift(bundle) if "log_handlers" not in p] == []  # a missing id is the bundle's to add
    assert json.loads((configs / "train.json").read_text())["initialize"][:3] == [
        "@bundle_on_path",
        "@common_package",
        "$monai.utils.set_determinism(seed=@seed)",
    ]


@pytest.mark.parametrize(
    "name",
    ["kdnet_brats_mri", "mtms_contrastive_cardiac_mri", "hlfd_tumour_ct", "agnostic_transfer_la_mri", "_template_kd"],
)
def test_the_collection_s_configs_pass_the_audit(name):
    from tools.bundle.audit import audit

    assert audit(BUNDLES / name) == []


@pytest.mark.parametrize(
    "config, reason",
    [
        ({"evil": "$__import__('os').system('x')"}, "name __import__"),
        ({"a": "$os.system('x')"}, "os.system is not in the allowed module functions"),
        ({"a": "$getattr(os, 'system')('x')"}, "name getattr"),
        ({"a": "$(lambda o: o.system('x'))(os)"}, "name os (a module used directly)"),
        ({"a": "$@x.__class__.__bases__"}, "attribute __class__"),
        ({"a": "$open('/etc/passwd').read()"}, "name open"),
        ({"a": "$os.environ.update({})"}, "os.environ.update is not in the allowed module functions"),
        ({"a": "$np.load('x.npy', allow_pickle=True)"}, "numpy.load is not in the allowed module functions"),
        ({"a": "$monai.utils.optional_import('os')[0].system('x')"}, "optional_import with another first argument"),
        ({"imports": ["$import subprocess"]}, "import of subprocess"),
        ({"a": "$exec('x')"}, "name exec"),
        ({"a": {"_target_": "subprocess.run", "args": ["x"]}}, "subprocess.run is outside"),
        (
            {"a": {"_target_": "torch.utils.cpp_extension.load", "name": "x"}},
            "torch.utils.cpp_extension.load is outside",
        ),
        ({"a": {"_target_": "monai.utils.optional_import", "module": "os"}}, "monai.utils.optional_import is outside"),
        ({"a": {"_target_": "optional_import", "module": "os"}}, "optional_import resolves to ['monai.utils.module']"),
        ({"a": {"_target_": "LoadImaged", "keys": "image", "_mode_": "debug"}}, "_mode_ debug"),
        ({"a": "%/elsewhere/config.json#id"}, "a macro reading another file"),
    ],
)
def test_the_audit_names_the_file_id_and_expression_of_code_outside_the_allow_list(config, reason):
    from tools.bundle.audit import audit_text

    findings = audit_text("configs/inference.json", json.dumps(config))
    assert findings and any(reason in f.reason for f in findings), findings
    assert str(findings[0]).startswith("configs/inference.json: ")


def test_the_audit_allows_what_configs_legitimately_do():
    from tools.bundle.audit import audit_text

    config = {
        "imports": ["$import glob", "$import os"],
        "a": "$os.path.join(@bundle_root, 'models', 'model.pt')",
        "b": "$[h for h in @handlers if h is not None] + [dict(x=1)]",
        "c": "$lambda images: torch.cat([torch.from_numpy(image.numpy()) for image in images.cpu()])",
        "d": "$monai.utils.optional_import('common', '0.3')[0].__name__",
        "e": {"_target_": "RandFlipd", "keys": "image", "prob": "$0.5 * @p"},
        "f": {"_target_": "common.losses.DistillationLoss", "terms": "@terms"},
        "g": "$torch.device('cuda:' + os.environ['LOCAL_RANK'] if torch.cuda.is_available() else 'cpu')",
        "h": {"_target_": "torch.utils.tensorboard.SummaryWriter", "log_dir": "@output_dir"},
    }
    assert audit_text("configs/train.json", json.dumps(config)) == []


def test_verify_refuses_a_config_attack_with_a_consistent_manifest_and_checksum(tmp_path, capsys):
    """The attack of a received bundle: code added to a config, its manifest line and the zip's
    checksum recomputed, so that integrity checks pass: the audit still refuses it, naming it."""
    original = export(fake_bundle(tmp_path), tmp_path / "sent")
    attacked = tmp_path / "received" / original.name
    attacked.parent.mkdir()
    evil = {"bundle_root": ".", "evil": "$__import__('os').system('touch pwned')", "initialize": ["@evil"]}
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(attacked, "w") as dst:
        files = {item.filename: src.read(item) for item in src.infolist()}
        top = next(iter(files)).split("/")[0]
        files[f"{top}/configs/inference.json"] = json.dumps(evil).encode()
        manifest = files[f"{top}/MANIFEST.sha256"].decode().splitlines()
        digest = sha256(files[f"{top}/configs/inference.json"])
        manifest = [
            f"{digest}  configs/inference.json" if line.endswith("  configs/inference.json") else line
            for line in manifest
        ]
        files[f"{top}/MANIFEST.sha256"] = ("\n".join(manifest) + "\n").encode()
        for name, data in files.items():
            dst.writestr(name, data)
    Path(f"{attacked}.sha256").write_text(f"{sha256(attacked.read_bytes())}  {attacked.name}\n")
    problems = verify(attacked)
    assert problems == [
        "config audit: configs/inference.json: evil: \"$__import__('os').system('touch pwned')\": name __import__"
    ]
    assert verify(attacked, {"configs/inference.json:evil"}) == []  # an expert's explicit acceptance
    with pytest.raises(SystemExit):
        export_main(["verify", str(attacked)])
    assert "REFUSED" in capsys.readouterr().out
    assert not (tmp_path / "pwned").exists()


def test_a_signed_bundle_is_checked_against_trusted_keys_and_the_attack_is_refused(tmp_path):
    """Signing covers the manifest (every file), name and version: the re-checksummed attack of a
    config is refused by the signature check on its own, an unsigned zip in strict mode, a zip
    signed by an untrusted key always."""
    from tools.bundle.signing import sign

    keys = {site: site_key(tmp_path / site, site) for site in ("hospital_a", "stranger")}
    trusted = tmp_path / "trusted_keys"
    trusted.write_text("# sites we take bundles from\n" + (tmp_path / "hospital_a.pub").read_text())
    bundle = fake_bundle(tmp_path)
    zip_path = export(bundle, tmp_path / "sent")
    assert verify(zip_path, trusted=trusted, strict=True)[0].startswith("unsigned: no tiny_bundle_v1.2.3.zip.sig")
    assert verify(zip_path) == []  # not strict: an unsigned zip is checked as before
    sign(zip_path, keys["hospital_a"])
    assert verify(zip_path, trusted=trusted, strict=True) == []
    signature = Path(f"{zip_path}.sig").read_text()
    # the same attack as above: a config changed, its manifest line and the zip checksum recomputed
    with zipfile.ZipFile(zip_path) as src:
        files = {item.filename: src.read(item) for item in src.infolist()}
    files["tiny_bundle/configs/inference.json"] = b'{"bundle_root": ".", "x": "$print(1)"}'
    manifest = files["tiny_bundle/MANIFEST.sha256"].decode().splitlines()
    digest = sha256(files["tiny_bundle/configs/inference.json"])
    manifest = [
        f"{digest}  configs/inference.json" if line.endswith("  configs/inference.json") else line for line in manifest
    ]
    files["tiny_bundle/MANIFEST.sha256"] = ("\n".join(manifest) + "\n").encode()
    with zipfile.ZipFile(zip_path, "w") as dst:
        for name, data in files.items():
            dst.writestr(name, data)
    Path(f"{zip_path}.sha256").write_text(f"{sha256(zip_path.read_bytes())}  {zip_path.name}\n")
    Path(f"{zip_path}.sig").write_text(signature)  # the old signature kept beside it
    assert verify(zip_path, {"configs/inference.json:x"}, trusted) == [
        "tiny_bundle_v1.2.3.zip.sig signs another manifest or bundle version than this zip holds"
    ]
    sign(zip_path, keys["stranger"])  # the attacker signs with a key of their own
    assert "which is not in" in verify(zip_path, trusted=trusted)[0]
    forged = signature.replace(
        signature.split("manifest-sha256 ")[1].split()[0],
        hashlib.sha256(files["tiny_bundle/MANIFEST.sha256"]).hexdigest(),
    )
    Path(f"{zip_path}.sig").write_text(forged)  # the payload rewritten, the hospital's signature kept
    assert "the signature does not match its payload" in verify(zip_path, trusted=trusted)[0]


def test_verify_refuses_zips_with_paths_that_leave_the_bundle_or_symbolic_links(tmp_path):
    original = export(fake_bundle(tmp_path), tmp_path / "sent")
    for case, entry in (("dotdot", "tiny_bundle/../../evil.py"), ("link", "tiny_bundle/docs/passwd")):
        bad = tmp_path / f"{case}.zip"
        with zipfile.ZipFile(original) as src, zipfile.ZipFile(bad, "w") as dst:
            for item in src.infolist():
                dst.writestr(item, src.read(item))
            info = zipfile.ZipInfo(entry)
            if case == "link":
                info.external_attr = 0o120777 << 16  # a symbolic link to /etc/passwd
            dst.writestr(info, "/etc/passwd" if case == "link" else "print(1)")
        Path(f"{bad}.sha256").write_text(f"{sha256(bad.read_bytes())}  {bad.name}\n")
        problems = verify(bad)
        expected = (
            "unsafe paths ['tiny_bundle/../../evil.py']"
            if case == "dotdot"
            else "symbolic links ['tiny_bundle/docs/passwd']"
        )
        assert problems == [expected], problems


def test_write_atomic_leaves_an_ordinary_file_and_no_temporary_one(tmp_path):
    import os

    from tools.bundle.files import write_atomic

    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "bundle.zip", b"whole")
    finally:
        os.umask(umask)
    assert (tmp_path / "bundle.zip").read_bytes() == b"whole"
    assert (tmp_path / "bundle.zip").stat().st_mode & 0o777 == 0o644  # readable by the receiving site's users
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.zip"]


def test_write_atomic_removes_what_a_killed_write_left_but_not_a_concurrent_writers_file(tmp_path):
    import os
    import time

    from tools.bundle.files import STALE_AFTER_S, write_atomic

    killed, running = tmp_path / ".bundle.zip.k1ll3d.partial", tmp_path / ".bundle.zip.runn1n.partial"
    other = tmp_path / ".other.zip.k1ll3d.partial"
    for leftover in (killed, running, other):
        leftover.write_bytes(b"half")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(killed, (old, old))
    os.utime(other, (old, old))
    write_atomic(tmp_path / "bundle.zip", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bundle.zip", running.name, other.name])
