"""Export bundles as self-contained, deterministic zips for another site, and verify a received zip.

    python -m tools.bundle.export export bundles/hlfd_tumour_ct --out dist [--torchscript] [--no_teacher]
    python -m tools.bundle.export export --all --out dist
    python -m tools.bundle.export verify dist/hlfd_tumour_ct_v0.2.0.zip
    python -m tools.bundle.export export bundles/X --out dist --sign site_key           # + <zip>.sig
    python -m tools.bundle.export verify dist/X_v1.0.0.zip --trusted trusted_keys --strict

``export`` writes ``<out>/<name>_v<version>.zip`` holding one folder ``<name>/``: ``LICENSE``,
``configs/``, ``docs/``, the bundle's own ``scripts/`` package, the student ``models/model.pt``,
optionally ``models/model.ts`` (TorchScript), the teacher's ``models/teacher/`` (left out with
``--no_teacher``), the collection's ``common/`` package (vendored, so the training configs run
without this repository) and ``MANIFEST.sha256``, the SHA-256 of every other file in it. The
vendored ``common`` version is recorded in the exported ``configs/metadata.json``
(``vendored_packages``) and in the manifest's first line. ``bundle_root`` is ``"."`` in every
config; a config holding this machine's absolute paths is refused. Entries are sorted, with
fixed timestamps and permissions, so the same bundle gives the same bytes. Next to the zip,
``<zip>.sha256`` holds the zip's own SHA-256 (``sha256sum`` format). ``--all`` exports every
bundle of ``bundles/`` except the template (``_``-prefixed folders).

``verify`` checks a received zip before anything in it is run (configs execute code): first its
signature (``<zip>.sig``, made by ``--sign`` with a site's Ed25519 key) against the ``--trusted``
public keys (:mod:`tools.bundle.signing`; ``--strict`` refuses an unsigned zip), then the zip
against its ``.sha256`` file, its entries against the manifest (no file missing, added or
altered; one top folder; no absolute or ``..`` paths, no symbolic links) and its configs against the audit's
allow-list (:mod:`tools.bundle.audit`; ``--accept FILE:ID`` after reading a finding). It prints
what is wrong and exits 1. Without a signature, send the ``.sha256`` file (or its line) through a
second channel: whoever can alter the zip in transit can also rewrite a checksum travelling with
it; a signature by a key the receiver trusts cannot be rewritten so.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import stat
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

from tools.bundle import signing
from tools.bundle.audit import audit_configs
from tools.bundle.files import write_atomic
from tools.bundle.verify import export_torchscript

REPO = Path(__file__).resolve().parents[2]
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
MANIFEST = "MANIFEST.sha256"
SKIPPED = {"__pycache__", ".pytest_cache"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not SKIPPED & set(p.parts) and p.suffix not in (".pyc",)
    )


def _personal_paths() -> list[str]:
    """Absolute paths of this machine that must not travel in a config."""
    paths = {str(REPO), str(REPO.parent), os.path.expanduser("~"), tempfile.gettempdir()}
    return sorted(p for p in paths if len(p) > 1)


def exported_config(path: Path) -> bytes:
    """A config as exported: ``bundle_root`` set to ``"."``; refused when it holds a personal path."""
    text = path.read_text()
    if path.suffix == ".json":
        config = json.loads(text)
        if "bundle_root" in config:
            config["bundle_root"] = "."
        text = json.dumps(config, indent=4) + "\n"
    leaked = [p for p in _personal_paths() if re.search(re.escape(p) + r"(?![\w.-])", text)]
    if leaked:
        raise ValueError(f"{path} holds absolute paths of this machine {leaked}; make them relative or parameters.")
    return text.encode()


def common_version() -> str:
    """The version of the ``common`` package this export vendors (read from its source, not imported)."""
    found = re.search(r'^__version__ = "([^"]+)"', (REPO / "common" / "__init__.py").read_text(), re.M)
    if found is None:
        raise ValueError(f"no __version__ in {REPO / 'common' / '__init__.py'}")
    return found.group(1)


def exported_metadata(path: Path) -> bytes:
    """The metadata as exported: with the version of the vendored ``common``."""
    meta = json.loads(path.read_text())
    meta["vendored_packages"] = {"common": common_version()}
    return (json.dumps(meta, indent=4) + "\n").encode()


def torchscript(bundle: Path) -> bytes:
    """``models/model.pt`` exported to TorchScript as the bundle verifier does (scripted, else traced)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.ts")
        export_torchscript(str(bundle), path)
        return Path(path).read_bytes()


def bundle_entries(bundle: Path, with_teacher: bool, with_torchscript: bool) -> dict[str, bytes]:
    """Every file of the export, by its path inside ``<name>/``."""
    for required in ("LICENSE", "configs/metadata.json", "configs/inference.json", "models/model.pt"):
        if not (bundle / required).is_file():
            raise FileNotFoundError(f"{bundle} has no {required}: not a complete bundle.")
    entries = {"LICENSE": (bundle / "LICENSE").read_bytes()}
    for path in _files(bundle / "configs"):
        exported = exported_metadata if path.name == "metadata.json" else exported_config
        entries[path.relative_to(bundle).as_posix()] = exported(path)
    for folder in ("docs", "scripts"):
        for path in _files(bundle / folder) if (bundle / folder).is_dir() else []:
            entries[path.relative_to(bundle).as_posix()] = path.read_bytes()
    entries["models/model.pt"] = (bundle / "models" / "model.pt").read_bytes()
    if with_teacher and (bundle / "models" / "teacher").is_dir():
        for path in _files(bundle / "models" / "teacher"):
            entries[path.relative_to(bundle).as_posix()] = path.read_bytes()
    if with_torchscript:
        entries["models/model.ts"] = torchscript(bundle)
    for path in _files(REPO / "common"):
        entries[(Path("common") / path.relative_to(REPO / "common")).as_posix()] = path.read_bytes()
    return entries


def write_zip(path: Path, name: str, version: str, entries: dict[str, bytes]) -> None:
    header = f"# {name} {version}, vendored common {common_version()}\n"
    manifest = header + "".join(f"{sha256(data)}  {key}\n" for key, data in sorted(entries.items()))
    everything = dict(entries) | {MANIFEST: manifest.encode()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for key in sorted(everything):
            info = zipfile.ZipInfo(f"{name}/{key}", date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, everything[key])
    data = buffer.getvalue()
    write_atomic(path, data)
    write_atomic(Path(f"{path}.sha256"), f"{sha256(data)}  {path.name}\n".encode())


def export(bundle: Path, out: Path, with_teacher: bool = True, with_torchscript: bool = False) -> Path:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    name = bundle.resolve().name
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}_v{meta['version']}.zip"
    write_zip(path, name, meta["version"], bundle_entries(bundle, with_teacher, with_torchscript))
    return path


def verify(
    path: Path, accepted: set[str] = frozenset(), trusted: Path | None = None, strict: bool = False
) -> list[str]:
    """What is wrong with a received zip (an empty list: it is what was sent, and its configs pass
    the audit of :mod:`tools.bundle.audit`, less the findings ``accepted`` as ``FILE:ID``).

    The signature is checked first (:func:`tools.bundle.signing.check` against the ``trusted`` keys;
    ``strict`` refuses an unsigned zip): a zip whose signature fails is refused before anything
    else is read from it."""
    problems = signing.check(path, trusted, strict)
    if problems:
        return problems
    checksum_file = Path(f"{path}.sha256")
    data = path.read_bytes()
    if not checksum_file.is_file():
        problems.append(f"no checksum file {checksum_file.name} next to the zip")
    elif checksum_file.read_text().split()[0] != sha256(data):
        problems.append(f"the zip's SHA-256 {sha256(data)} differs from {checksum_file.name}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            unsafe = [n for n in names if n.startswith("/") or ".." in Path(n).parts or ":" in n]
            if unsafe:
                return problems + [f"unsafe paths {unsafe}"]
            links = [i.filename for i in archive.infolist() if stat.S_ISLNK(i.external_attr >> 16)]
            if links:  # unpacked, a link can point anywhere on the receiving machine
                return problems + [f"symbolic links {links}"]
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) != 1:
                return problems + [f"expected one top folder, found {sorted(tops)}"]
            top = tops.pop()
            files = {n[len(top) + 1 :]: archive.read(n) for n in names if not n.endswith("/")}
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        return problems + [f"unreadable zip: {e}"]
    if MANIFEST not in files:
        return problems + [f"no {MANIFEST} in {top}/"]
    listed = {}
    for line in files.pop(MANIFEST).decode().splitlines():
        if line.startswith("#"):  # the header: bundle, version, vendored common
            continue
        digest, _, key = line.partition("  ")
        listed[key] = digest
    problems += [f"missing: {key}" for key in sorted(set(listed) - set(files))]
    problems += [f"not in the manifest: {key}" for key in sorted(set(files) - set(listed))]
    problems += [f"altered: {key}" for key in sorted(set(files) & set(listed)) if sha256(files[key]) != listed[key]]
    configs = {key: data.decode() for key, data in files.items() if re.fullmatch(r"configs/[^/]+\.json", key)}
    return problems + [f"config audit: {finding}" for finding in audit_configs(configs, accepted)]


def collection_bundles() -> list[Path]:
    """The bundles ``--all`` exports: every folder of ``bundles/`` with a metadata file, the template left out."""
    return sorted(
        p
        for p in (REPO / "bundles").iterdir()
        if (p / "configs" / "metadata.json").is_file() and not p.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exporting = sub.add_parser("export", help="write <name>_v<version>.zip and its .sha256")
    exporting.add_argument("bundles", nargs="*", help="bundle folders")
    exporting.add_argument("--all", action="store_true", help="every bundle under bundles/")
    exporting.add_argument("--out", required=True)
    exporting.add_argument("--torchscript", action="store_true", help="add models/model.ts")
    exporting.add_argument("--no_teacher", action="store_true", help="leave models/teacher/ out")
    exporting.add_argument("--sign", type=Path, metavar="KEY", help="write <zip>.sig with this Ed25519 key")
    checking = sub.add_parser("verify", help="check a received zip against its checksum and manifest")
    checking.add_argument("zips", nargs="+")
    checking.add_argument("--accept", action="append", default=[], metavar="FILE:ID", help="accept a config finding")
    checking.add_argument("--trusted", type=Path, help="file of trusted OpenSSH public keys (authorized_keys format)")
    checking.add_argument("--strict", action="store_true", help="refuse a zip without a trusted signature")
    args = parser.parse_args(argv)
    if args.command == "export":
        bundles = collection_bundles() if args.all else [Path(b) for b in args.bundles]
        if not bundles:
            parser.error("name bundle folders or use --all")
        for bundle in bundles:
            path = export(bundle, Path(args.out), not args.no_teacher, args.torchscript)
            print(
                f"{path}  {path.stat().st_size / 2**20:.1f} MiB  sha256 {Path(f'{path}.sha256').read_text().split()[0]}"
            )
            if args.sign:
                print(f"{signing.sign(path, args.sign)}: signed")
        return
    failed = False
    for path in map(Path, args.zips):
        problems = verify(path, set(args.accept), args.trusted, args.strict)
        print(f"{path}: " + ("ok" if not problems else "REFUSED\n  " + "\n  ".join(problems)))
        failed |= bool(problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
