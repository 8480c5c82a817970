"""``import syre`` then ``syre.data`` / ``syre.diagnostics``: subpackages load on first attribute access."""
import subprocess
import sys
import textwrap


def test_subpackages_load_on_first_use():
    code = textwrap.dedent("""
        import sys
        import syre
        lazy = ["syre.data", "syre.diagnostics", "syre.bench", "syre.integrations", "syre.diagnose", "syre.demo"]
        assert not [m for m in lazy if m in sys.modules], [m for m in lazy if m in sys.modules]
        assert callable(syre.diagnostics.audit) and callable(syre.data.digits) and callable(syre.data.fashion_mnist)
        assert syre.diagnostics is sys.modules["syre.diagnostics"]       # the real module, cached
        assert "syre.bench" not in sys.modules                            # only what was asked for
        assert {"data", "diagnostics", "bench", "integrations"} <= set(dir(syre))
        assert not hasattr(syre, "no_such_thing")                         # AttributeError, as usual
        try:
            syre.optax_typo
        except AttributeError as exc:
            assert "module 'syre' has no attribute 'optax_typo'" in str(exc)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
