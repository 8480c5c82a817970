"""Sphinx configuration: API reference from the docstrings (autodoc + napoleon), pages in MyST Markdown."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from syre import __version__  # noqa: E402

project = "syre"
author = "syre contributors"
copyright = "syre contributors"
version = release = __version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "build.sh"]

# The integrations are documented without their frameworks installed: autodoc imports them
# against stand-ins. Nothing else is mocked (torch and numpy are real).
autodoc_mock_imports = ["lightning", "pytorch_lightning", "transformers", "stable_baselines3", "jax", "optax"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"syre {release}"
html_static_path = []
