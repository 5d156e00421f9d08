"""Issue 16.4: packages a coordinator can trust. Sites sign their package with an Ed25519 key
(``blina site-key``, ``site-run --sign-key``); ``pool --keys`` verifies each package against the keys
the coordinator registered for its site. A package whose statistics were edited and whose manifest
checksums were recomputed (the forgery checksums cannot catch) is refused; so are unsigned packages,
packages signed by an unregistered or another site's key, a listed extra file with person-level rows
and counts of 3 that should be suppressed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from blina_study.adapter.cli import main
from blina_study.analysis.federated.package import PackageError, build_site_package, pool_packages, read_package
from blina_study.analysis.federated.signing import SIGNATURE, generate_site_key, load_registry
from blina_study.analysis.federated.simulate import simulate_site

INFO = {
    "package_version": "0.1.0",
    "study_definition_hash": "a11c" * 16,
    "parameters": {"course_gap_days": 7, "landmark_days": 365, "age_group_cut_years": 10.0},
    "vocabulary_version": "v5.0",
}
STATS = "pooling/statistics.json"


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """Three sites with their own keys and signed exact packages; the coordinator's key folder."""
    root = tmp_path_factory.mktemp("signed")
    rng = np.random.default_rng(16)
    registry = root / "registered"
    registry.mkdir()
    pkgs = {}
    for site, n in (("A", 60), ("B", 45), ("C", 40)):
        private, public = generate_site_key(site, root / f"{site}-keys")
        shutil.copy(public, registry / public.name)
        course, patient = simulate_site(rng, site, n)
        pkgs[site] = build_site_package(course, patient, site_id=site, manifest_info=INFO,
                                        out_path=root / f"{site}.zip", sign_key=private)  # fmt: skip
    return root, registry, pkgs


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(out: Path, members: dict[str, bytes], *, fix_checksums: bool = True) -> Path:
    """A copy with changed members, the manifest's checksums recomputed as a forger would."""
    if fix_checksums:
        manifest = json.loads(members["manifest.json"])
        for name, data in members.items():
            if name in manifest["files"]:
                manifest["files"][name].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
        members = {**members, "manifest.json": json.dumps(manifest, indent=1, sort_keys=True).encode()}
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out


def _forged(pkg: Path, out: Path) -> Path:
    """The issue's forgery: one site's EFS event counts doubled in statistics.json, checksums redone."""
    members = _members(pkg)
    stats = json.loads(members[STATS])
    km = stats["statistics"]["km/efs/all"]
    km["events"] = [2 * e for e in km["events"]]
    return _write(out, {**members, STATS: json.dumps(stats).encode()})


def test_signed_packages_pool_with_registered_keys(signed):
    _, registry, pkgs = signed
    pooled = pool_packages(list(pkgs.values()), keys=registry)
    keys = load_registry(registry)
    assert set(pooled.signatures) == {"A", "B", "C"}
    for site, kid in pooled.signatures.items():
        assert kid in keys[site]
    assert json.loads(pooled.to_json())["signatures"] == pooled.signatures


def test_forged_statistics_with_recomputed_checksums(signed, tmp_path):
    """Checksums alone accept the forgery (and it changes the pooled result); the signature refuses it."""
    _, registry, pkgs = signed
    forged = _forged(pkgs["B"], tmp_path / "B-forged.zip")
    honest = pool_packages(list(pkgs.values()))
    fooled = pool_packages([pkgs["A"], forged, pkgs["C"]])  # checksums only: accepted
    assert fooled.pooled["survival"]["efs"]["all"]["n_events"] > honest.pooled["survival"]["efs"]["all"]["n_events"]
    with pytest.raises(PackageError, match="signature of site 'B' does not match"):
        pool_packages([pkgs["A"], forged, pkgs["C"]], keys=registry)


def test_a_forger_who_re_signs_with_another_key_is_refused(signed, tmp_path):
    root, registry, pkgs = signed
    forged = _forged(pkgs["B"], tmp_path / "B-forged.zip")
    mallory, _ = generate_site_key("B", tmp_path / "mallory")
    members = _members(forged)
    from blina_study.analysis.federated.signing import sign_manifest

    members[SIGNATURE] = sign_manifest(members["manifest.json"], "B", mallory)
    resigned = _write(tmp_path / "B-resigned.zip", members, fix_checksums=False)
    with pytest.raises(PackageError, match="not registered for site 'B'"):
        read_package(resigned, keys=load_registry(registry))
    # Site A's genuine key cannot vouch for site B either.
    members[SIGNATURE] = sign_manifest(members["manifest.json"], "B", root / "A-keys" / "A.key")
    as_a = _write(tmp_path / "B-as-A.zip", members, fix_checksums=False)
    with pytest.raises(PackageError, match="not registered for site 'B'"):
        read_package(as_a, keys=load_registry(registry))


def test_unsigned_and_unregistered(signed, tmp_path):
    _, registry, pkgs = signed
    members = _members(pkgs["A"])
    del members[SIGNATURE]
    unsigned = _write(tmp_path / "A-unsigned.zip", members, fix_checksums=False)
    read_package(unsigned)  # without keys: checksums only
    with pytest.raises(PackageError, match="not signed"):
        read_package(unsigned, keys=load_registry(registry))
    only_a = tmp_path / "only-a"
    only_a.mkdir()
    shutil.copy(registry / "A.pub", only_a / "A.pub")
    with pytest.raises(PackageError, match="no public key registered for site 'B'"):
        pool_packages([pkgs["A"], pkgs["B"]], keys=only_a)
    with pytest.raises(PackageError, match="no registered public key"):
        pool_packages([pkgs["A"]], keys=tmp_path / "nowhere")


def test_signature_of_another_package_does_not_transfer(signed, tmp_path):
    _, registry, pkgs = signed
    members = _members(pkgs["B"])
    members[SIGNATURE] = _members(pkgs["A"])[SIGNATURE]
    swapped = _write(tmp_path / "swap.zip", members, fix_checksums=False)
    with pytest.raises(PackageError, match="signature.json is for 'A'"):
        read_package(swapped, keys=load_registry(registry))


def test_key_rotation(signed, tmp_path):
    """Rotate: the site makes a new key, the coordinator registers it beside the old one (both
    verify), then removes the old one (packages signed with it are refused)."""
    root, registry, _ = signed
    rng = np.random.default_rng(3)
    course, patient = simulate_site(rng, "A", 30)
    new_private, new_public = generate_site_key("A", tmp_path / "A-2027")
    rotated = tmp_path / "registered"
    shutil.copytree(registry, rotated)
    shutil.copy(new_public, rotated / "A.2027.pub")
    old_pkg = build_site_package(course, patient, site_id="A", manifest_info=INFO, out_path=tmp_path / "old.zip",
                                 sign_key=root / "A-keys" / "A.key")  # fmt: skip
    new_pkg = build_site_package(course, patient, site_id="A", manifest_info=INFO, out_path=tmp_path / "new.zip",
                                 sign_key=new_private)  # fmt: skip
    assert len(load_registry(rotated)["A"]) == 2
    read_package(old_pkg, keys=load_registry(rotated))
    read_package(new_pkg, keys=load_registry(rotated))
    (rotated / "A.pub").unlink()
    read_package(new_pkg, keys=load_registry(rotated))
    with pytest.raises(PackageError, match="not registered for site 'A'"):
        read_package(old_pkg, keys=load_registry(rotated))


def test_site_key_command_and_passphrase(tmp_path, monkeypatch, capsys):
    assert main(["site-key", "--site-id", "center9", "--out-dir", str(tmp_path / "k")]) == 0
    private = tmp_path / "k" / "center9.key"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"ENCRYPTED" not in private.read_bytes()
    assert "key id" in capsys.readouterr().out
    assert main(["site-key", "--site-id", "center9", "--out-dir", str(tmp_path / "k")]) == 2  # never overwritten
    assert "never overwritten" in capsys.readouterr().err
    monkeypatch.setenv("BLINA_KEY_PASSPHRASE", "correct horse")
    enc, _ = generate_site_key("center8", tmp_path / "e")
    assert b"ENCRYPTED PRIVATE KEY" in enc.read_bytes()
    course, patient = simulate_site(np.random.default_rng(5), "center8", 20)
    pkg = build_site_package(course, patient, site_id="center8", manifest_info=INFO, out_path=tmp_path / "e.zip",
                             sign_key=enc)  # fmt: skip
    read_package(pkg, keys=load_registry(tmp_path / "e"))
    monkeypatch.setenv("BLINA_KEY_PASSPHRASE", "wrong")
    with pytest.raises(Exception, match="not a usable private key"):
        build_site_package(course, patient, site_id="center8", manifest_info=INFO, out_path=tmp_path / "f.zip",
                           sign_key=enc)  # fmt: skip


def test_site_run_signs_and_pool_verifies(signed, tmp_path, capsys):
    """The CLI route: site-run --sign-key, pool --keys (and pool without --keys warns)."""
    rng = np.random.default_rng(9)
    keys = tmp_path / "keys"
    registry = tmp_path / "registry"
    registry.mkdir()
    pkgs = []
    for site in ("s1", "s2"):
        assert main(["site-key", "--site-id", site, "--out-dir", str(keys)]) == 0
        shutil.copy(keys / f"{site}.pub", registry / f"{site}.pub")
        course, patient = simulate_site(rng, site, 40)
        course.to_parquet(tmp_path / f"{site}-c.parquet")
        patient.to_parquet(tmp_path / f"{site}-p.parquet")
        pkg = tmp_path / f"{site}.zip"
        assert main(["site-run", "--course", str(tmp_path / f"{site}-c.parquet"), "--patient",
                     str(tmp_path / f"{site}-p.parquet"), "--site-id", site, "--out", str(pkg), "--share", "exact",
                     "--sign-key", str(keys / f"{site}.key")]) == 0
        assert SIGNATURE in _members(pkg)
        pkgs.append(str(pkg))
    capsys.readouterr()
    assert main(["pool", *pkgs, "--out", str(tmp_path / "p1"), "--keys", str(registry)]) == 0
    assert "signatures verified" in capsys.readouterr().out
    assert main(["pool", *pkgs, "--out", str(tmp_path / "p2")]) == 0
    assert "not authenticated" in capsys.readouterr().err
    forged = _forged(Path(pkgs[1]), tmp_path / "s2-forged.zip")
    assert main(["pool", pkgs[0], str(forged), "--out", str(tmp_path / "p3"), "--keys", str(registry)]) == 2
    assert "does not match" in capsys.readouterr().err
    assert main(["site-run", "--course", str(tmp_path / "s1-c.parquet"), "--patient", str(tmp_path / "s1-p.parquet"),
                 "--site-id", "s1", "--out", str(tmp_path / "x.zip"), "--sign-key", str(tmp_path / "no.key")]) == 2
    assert not (tmp_path / "x.zip").exists()


def test_listed_extra_file_with_person_level_rows_is_refused(signed, tmp_path):
    """16.4 finding: an extra file, listed in the manifest with its checksum, whose rows are one per
    patient under innocent column names (so the field-name scanner alone would not see it)."""
    _, _, pkgs = signed
    members = _members(pkgs["A"])
    rows = b"group,day,flag\n" + b"".join(b"R/R,%d,1\n" % d for d in (12, 40, 95, 180, 366))
    members["results/extra.csv"] = rows
    manifest = json.loads(members["manifest.json"])
    manifest["files"]["results/extra.csv"] = {"sha256": hashlib.sha256(rows).hexdigest(), "bytes": len(rows),
                                              "disclosure": "publishable"}  # fmt: skip
    members["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(PackageError, match="lists files that an exact package does not have"):
        read_package(_write(tmp_path / "extra.zip", members, fix_checksums=False))


def test_count_of_three_that_should_be_suppressed_is_refused(signed, tmp_path):
    """16.4 finding: a published count of 3 (checksums recomputed) is refused at pool."""
    _, _, pkgs = signed
    members = _members(pkgs["A"])
    text = members["results/count_tables.csv"].decode().splitlines()
    i = next(i for i, line in enumerate(text[1:], 1) if line.endswith(",yes"))
    text[i] = text[i].removesuffix(",,yes") + ",3,"
    members["results/count_tables.csv"] = ("\n".join(text) + "\n").encode()
    with pytest.raises(PackageError, match="count 3 is below min_cell 5 and not suppressed"):
        read_package(_write(tmp_path / "three.zip", members))
