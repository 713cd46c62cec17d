"""Hostile specs: every odd input runs correctly or is a typed nscg error, never a crash."""

from __future__ import annotations

import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nscg
from nscg import Container
from tests.conftest import children, open_fds

weird_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "..", "/../..", "/tmp/../etc", "a\0b", "\udcff", "/" * 300, "x" * 5000]),
)
ids = st.one_of(st.integers(min_value=-(2**40), max_value=2**40), st.sampled_from([0, 65534]))
limits = st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70))


@st.composite
def containers(draw: st.DrawFn) -> Container:
    c = Container()
    ops = draw(st.lists(st.integers(0, 9), max_size=6))
    for op in ops:
        if op == 0:
            c = c.with_hostname(draw(weird_text))
        elif op == 1:
            c = c.with_cwd(draw(weird_text))
        elif op == 2:
            c = c.with_env({draw(weird_text): draw(weird_text)})
        elif op == 3:
            c = c.with_user(draw(ids), draw(ids))
        elif op == 4:
            res = draw(st.sampled_from(["nofile", "nproc", "bogus", 7]))
            assert isinstance(res, (int, str))
            c = c.with_rlimit(res, draw(limits))
        elif op == 5:
            c = c.with_uid_map(*draw(st.lists(st.tuples(ids, ids, ids), max_size=400)))
        elif op == 6:
            c = c.with_namespaces(draw(st.one_of(st.integers(-5, 2**31), weird_text)))
        elif op == 7:
            c = c.with_time_offsets(monotonic=draw(st.floats(allow_nan=True)))
        elif op == 8:
            c = c.with_domainname(draw(weird_text))
        else:
            c = c.with_user(0, 0, draw(st.lists(ids, max_size=70000)))
    return c


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_weird_specs_run_or_fail_typed(data: st.DataObject) -> None:
    fds, kids = open_fds(), set(children())
    try:
        c = data.draw(containers())
        argv = data.draw(st.one_of(st.just(["true"]), st.lists(weird_text, min_size=0, max_size=3)))
        r = c.run(argv, timeout=20)
        assert isinstance(r.returncode, int)
    except nscg.NscgError:
        pass  # SpecError, SpawnError, ExecutableNotFoundError, UnsupportedError: typed
    except (TypeError, ValueError) as e:
        # plain ValueError/TypeError are allowed only as SpecError
        raise AssertionError(f"untyped error {type(e).__name__}: {e}") from e
    assert open_fds() == fds
    assert set(children()) == kids
    assert os.getpid() > 0


# ------------------------------------------------------------------ root filesystems
weird_path = st.one_of(
    weird_text,
    st.sampled_from(
        [
            "/",
            "/tmp/a/../b",
            "/tmp/..",
            "/../../etc",
            "/tmp/./x",
            "/tmp/\udcff\udcfe",
            "/tmp/a\0",
            "/tmp/" + "d/" * 900,
            "/proc/self/root",
            "/tmp/x",
            "/tmp/y/z",
        ]
    ),
    st.builds(lambda b: "/tmp/" + b.decode("utf-8", "surrogateescape"), st.binary(max_size=20)),
)
sizes = st.one_of(st.none(), st.integers(min_value=-(2**70), max_value=2**70))


@st.composite
def root_plans(draw: st.DrawFn, source_dir: str) -> nscg.RootFS:
    """RootFS.host() plus odd ops; bind sources come from ``source_dir`` or are odd paths."""
    root = nscg.RootFS.host(proc=draw(st.booleans()), mask=draw(st.booleans()))
    sources = st.one_of(st.just(source_dir), st.just(source_dir + "/f"), weird_path)
    for op in draw(st.lists(st.integers(0, 7), max_size=6)):
        if op == 0:
            root = root.bind(
                draw(sources),
                draw(st.one_of(st.none(), weird_path)),
                readonly=draw(st.booleans()),
                optional=draw(st.booleans()),
            )
        elif op == 1:
            root = root.tmpfs(draw(weird_path), size=draw(sizes), mode=draw(st.integers(-1, 5000)))
        elif op == 2:
            root = root.mkdir(draw(weird_path), draw(st.integers(-1, 0o7777)))
        elif op == 3:
            root = root.symlink(draw(weird_path), draw(weird_path))
        elif op == 4:
            root = root.file(draw(weird_path), draw(st.one_of(st.binary(max_size=64), weird_text)))
        elif op == 5:
            root = root.mask(*draw(st.lists(weird_path, max_size=3)))
        elif op == 6:
            root = root.readonly(*draw(st.lists(weird_path, max_size=3)))
        else:  # a huge plan
            n = draw(st.sampled_from([200, 3000]))
            root = root.then(*(nscg.rootfs.Tmpfs(f"/tmp/m{i}", size=4096) for i in range(n)))
    return root


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_weird_root_filesystems_run_or_fail_typed(data: st.DataObject) -> None:
    """Odd RootFS plans: a run, or a typed error; nothing left on the host either way."""
    from tests.conftest import mount_count

    src = tempfile.mkdtemp(prefix="nscg-fuzz-root-", dir="/var/tmp")
    with open(os.path.join(src, "f"), "w") as f:
        f.write("x")
    fds, kids, mounts = open_fds(), set(children()), mount_count()
    try:
        root = data.draw(root_plans(src))
        r = Container().with_rootfs(root).run(["true"], timeout=30)
        assert r.returncode == 0, r
    except nscg.NscgError:
        pass  # SpecError before anything ran, SpawnError from the child: typed
    except (TypeError, ValueError) as e:
        raise AssertionError(f"untyped error {type(e).__name__}: {e}") from e
    finally:
        shutil.rmtree(src)
    assert open_fds() == fds
    assert set(children()) == kids
    assert mount_count() == mounts, "the host's mount table changed"
