"""mkdocs hook: the API reference pages, generated at build time from ntkdyn's own list of public
names (``ntkdyn.__all__``), so that the reference cannot miss or invent a name.

- ``reference/index.md``: every public function and class of ``ntkdyn`` (documented where it is
  defined, found by importing it), rendered by mkdocstrings from its docstring;
- ``reference/<module>.md``: one page per public submodule (the modules in ``ntkdyn.__all__``).

The pages are appended to the "API reference" entry of ``nav`` in mkdocs.yml; pages of docs/ that
nav does not list go under "More".
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys

from mkdocs.structure.files import File

NAV_TITLE = "API reference"


def public_names() -> tuple[list[tuple[str, str]], list[str]]:
    """(name, dotted path where it is defined) for the functions and classes of ``ntkdyn.__all__``,
    and the public submodules' names, in ``__all__``'s order."""
    ntkdyn = importlib.import_module("ntkdyn")
    objects, modules = [], []
    for name in ntkdyn.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(ntkdyn, name)
        if inspect.ismodule(obj):
            modules.append(obj.__name__.removeprefix("ntkdyn."))
        else:
            objects.append((name, f"{obj.__module__}.{obj.__qualname__}"))
    return objects, modules


def top_level_page(objects: list[tuple[str, str]], modules: list[str]) -> str:
    lines = [
        "# API reference",
        "",
        "Every name of `ntkdyn.__all__`, documented from its docstring where it is defined (the import",
        "path for users is `ntkdyn.<name>`). The public submodules have a page each: "
        + ", ".join(f"[`ntkdyn.{m}`]({m}.md)" for m in modules)
        + ". Everything else lives in submodules whose names may change between versions.",
        "",
    ]
    for name, path in objects:
        lines += [
            f"## `ntkdyn.{name}`",
            "",
            f"::: {path}",
            "    options:",
            "      show_root_heading: false",
            "      show_root_toc_entry: false",
            "      heading_level: 3",
            "",
        ]
    return "\n".join(lines)


def on_config(config):
    # import ntkdyn from this repository, the tree that mkdocstrings reads (paths: [.])
    sys.path.insert(0, os.path.dirname(os.path.abspath(config.config_file_path)))
    objects, modules = public_names()
    entries = [{"ntkdyn": "reference/index.md"}] + [{f"ntkdyn.{m}": f"reference/{m}.md"} for m in modules]
    for item in config["nav"]:
        if isinstance(item, dict) and NAV_TITLE in item:
            item[NAV_TITLE] = entries
    return config


def on_files(files, config):
    """Adds the generated reference pages, and appends to ``nav`` under "More" any page of docs/
    that nav does not list (so that a page added by another change is never unreachable)."""
    listed = set(_nav_pages(config["nav"]))
    extra = [f.src_uri for f in files.documentation_pages() if f.src_uri not in listed]
    extra = [uri for uri in extra if not uri.startswith("reference/")]
    if extra:
        config["nav"].append({"More": sorted(extra)})
    objects, modules = public_names()
    files.append(File.generated(config, "reference/index.md", content=top_level_page(objects, modules)))
    for m in modules:
        files.append(File.generated(config, f"reference/{m}.md", content=module_page(m, objects)))
    return files


def _nav_pages(nav) -> list[str]:
    """Every page path named in a nav structure (lists, {title: page or list}, or a plain page)."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def module_page(module: str, objects: list[tuple[str, str]]) -> str:
    """A submodule's page; its members that are also top-level names are documented once, on the
    top-level page, and linked from here."""
    shared = [(name, path) for name, path in objects if path.rsplit(".", 1)[0] == f"ntkdyn.{module}"]
    lines = [f"# `ntkdyn.{module}`", ""]
    if shared:
        links = ", ".join(f"[`{name}`](index.md#ntkdyn{name.lower()})" for name, _ in shared)
        lines += [f"Also exported as `ntkdyn.<name>` and documented on the top-level page: {links}.", ""]
    lines += [f"::: ntkdyn.{module}", "    options:", "      show_root_heading: false"]
    if shared:
        exclude = ", ".join(f'"!^{path.rsplit(".", 1)[1]}$"' for _, path in shared)
        lines += [f'      filters: ["!^_", {exclude}]']
    return "\n".join(lines) + "\n"
