#!/usr/bin/env python3
"""The MSRV check that works without a second toolchain (rustup's servers are out of reach).

Proves, for the `rust-version` in the root Cargo.toml (the MSRV):
  1. every workspace crate declares that same rust-version;
  2. every package in the committed Cargo.lock's resolve (all features, all targets)
     declares a rust-version at or below it (or none);
  3. with --fresh: a lockfile resolved from scratch with the MSRV-aware resolver
     (CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback, what a user's `cargo add`
     or `cargo install` gets) passes check 2 too.
Clippy's `incompatible_msrv` lint (on by default, -D warnings in CI) covers the other
half: no std API newer than the MSRV is used by our code.
Not proven: that no *language* feature newer than the MSRV is used (ours or a
dependency's, beyond what its rust-version declares); only building with that
toolchain shows that.
"""
import json, os, shutil, subprocess, sys, tempfile

def ver(s):
    parts = [int(x) for x in s.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

def metadata(cwd, locked=True):
    cmd = ["cargo", "metadata", "--format-version", "1", "--all-features"]
    if locked:
        cmd.append("--locked")
    return json.loads(subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout)

def check(m, msrv, what):
    ids = {n["id"] for n in m["resolve"]["nodes"]}
    pkgs = [p for p in m["packages"] if p["id"] in ids]
    too_new = [f'{p["name"]} {p["version"]} needs {p["rust_version"]}'
               for p in pkgs if p.get("rust_version") and ver(p["rust_version"]) > ver(msrv)]
    top = max((ver(p["rust_version"]), p["name"]) for p in pkgs
              if p.get("rust_version") and p["id"] not in m["workspace_members"])
    print(f"{what}: {len(pkgs)} packages; newest dependency rust-version "
          f"{'.'.join(map(str, top[0]))} ({top[1]})")
    return too_new

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
m = metadata(root)
members = [p for p in m["packages"] if p["id"] in m["workspace_members"]]
msrv = next(p["rust_version"] for p in members if p["manifest_path"] == os.path.join(root, "Cargo.toml"))
errors = [f'{p["name"]} declares rust-version {p.get("rust_version")}, the workspace {msrv}'
          for p in members if p.get("rust_version") != msrv]
print(f"MSRV {msrv}: {', '.join(p['name'] for p in members)}")
errors += check(m, msrv, "Cargo.lock")
if "--fresh" in sys.argv:
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "ws")
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns("target", ".git", "fuzz"))
        os.remove(os.path.join(copy, "Cargo.lock"))
        env = dict(os.environ, CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS="fallback")
        subprocess.run(["cargo", "generate-lockfile", "--quiet"], cwd=copy, env=env, check=True)
        errors += check(metadata(copy), msrv, "fresh MSRV-aware resolve")
for e in errors:
    print("error:", e)
sys.exit(1 if errors else 0)
