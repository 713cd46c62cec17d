"""Hostile specs: every odd input runs correctly or is a typed nscg error, never a crash."""

from __future__ import annotations

import os

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
