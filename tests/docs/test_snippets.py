"""Every ```python block of README.md and docs/**/*.md runs as written.

How a page's snippets run, and the markers the runner reads (HTML comments: invisible on the
rendered page, visible in the Markdown source):

- ``<!-- snippets: page -->`` (the page builds up state like a tutorial): the blocks run in
  order, in one namespace, in one fresh temporary working directory.
- ``<!-- snippets: each -->`` (the blocks are independent examples): each block runs alone,
  in a namespace and a temporary working directory of its own.

  Every page with a ```python block states one of the two (``test_every_page_states_its_rule``).
- ``<!-- snippet: notest REASON -->`` on the line before a fence: the block is not run, on
  purpose (a fragment of a larger program, a server address of a real deployment...). The
  reason is required; keep these rare.

What the runner provides, so a snippet runs as a user pastes it:

- Servers, through the environment variables the snippets read with a default for a user's
  own machine (``os.environ.get("REDIS_URL", "redis://localhost:6379/0")``): ``REDIS_URL``
  (the suite's redis-server, database 9), ``MONGODB_URL`` (the MongoDB wire server), and for
  S3 the standard ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` that
  boto reads by itself (SeaweedFS). Every ``s3://bucket`` named on a page is created first.
  A server starts only for a page whose snippets name its variable.
- A Prefect API (``prefect_test_harness``, shared by the pages) for a page whose snippets
  import Prefect or use the blocks, tasks or flows of prefect_memory.

Python code other than ```python blocks (```bash, ```json, ```text...) is not run.
"""

from __future__ import annotations

import ast
import os
import re
import socket
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")
PAGE_RULE = re.compile(r"<!--\s*snippets:\s*(?P<rule>page|each)\s*-->")
NOTEST = re.compile(r"^\s*<!--\s*snippet:\s*notest\b\s*(?P<reason>.*?)\s*-->\s*$")
NEEDS_PREFECT = re.compile(
    r"^\s*(from|import)\s+prefect\b(?!_memory)|prefect_memory\.(blocks|tasks|flows)\b", re.M
)
S3_BUCKET = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])")


@dataclass(frozen=True)
class Snippet:
    """One ```python block: its page, its first code line (1-based) and its code."""

    page: Path
    line: int
    code: str
    notest: str | None  # the reason, when marked not runnable

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


class SnippetFailed(AssertionError):
    """A docs snippet raised (the snippet's own error is the cause)."""


def extract(page: Path) -> list[Snippet]:
    """The ```python blocks of ``page``, dedented (a block may sit in a list item)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    snippets: list[Snippet] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match["fence"], match["info"]
        end = i + 1
        while end < len(lines):
            close = lines[end].strip()
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]):
                break
            end += 1
        lang = info.split()[0].lower() if info.split() else ""
        if lang in ("python", "py"):
            previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
            marker = NOTEST.match(previous)
            code = textwrap.dedent("\n".join(lines[i + 1 : end]))
            reason = marker["reason"] if marker else None
            snippets.append(Snippet(page, i + 2, code + "\n", reason))
        i = end + 1
    return snippets


def page_rule(page: Path) -> str | None:
    match = PAGE_RULE.search(page.read_text(encoding="utf-8"))
    return match["rule"] if match else None


SNIPPET_PAGES = [page for page in PAGES if extract(page)]


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def placeholder_ellipses(code: str) -> list[int]:
    """Lines where ``...`` stands for something left out (an argument, a value), as opposed
    to ``...`` as a statement (the body of a stub ``def f(): ...``)."""
    tree = ast.parse(code)
    allowed = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value is Ellipsis and id(node) not in allowed
    ]


# --------------------------------------------------------------------------------------------
# The rules themselves
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", SNIPPET_PAGES, ids=_page_id)
def test_every_page_states_its_rule(page: Path) -> None:
    assert page_rule(page) in ("page", "each"), (
        f"{_page_id(page)} has ```python blocks but no <!-- snippets: page --> or "
        "<!-- snippets: each --> marker saying how they run"
    )


@pytest.mark.parametrize("page", SNIPPET_PAGES, ids=_page_id)
def test_snippets_have_no_placeholders(page: Path) -> None:
    problems = []
    for snippet in extract(page):
        if snippet.notest is not None:
            assert snippet.notest, f"{snippet.where}: a notest marker needs a reason"
            continue
        try:
            lines = placeholder_ellipses(snippet.code)
        except SyntaxError as err:
            problems.append(f"{snippet.where}: not Python ({err.msg}, line {err.lineno})")
            continue
        problems += [f"{snippet.where}: `...` as a value, line {n}" for n in lines]
    assert not problems, "\n".join(problems)


def test_the_extractor_reads_markers(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "<!-- snippets: page -->\n"
        "```python\nx = 1\n```\n\n"
        "- item\n\n  ```python\n  y = x + 1\n  ```\n\n"
        "<!-- snippet: notest needs a real cluster -->\n"
        "```python\nz = {...}\n```\n"
        "```bash\necho no\n```\n",
        encoding="utf-8",
    )
    snippets = extract(page)
    assert [s.code for s in snippets] == ["x = 1\n", "y = x + 1\n", "z = {...}\n"]
    assert [s.notest for s in snippets] == [None, None, "needs a real cluster"]
    assert page_rule(page) == "page"
    assert placeholder_ellipses("f(a=...)\ndef g(): ...\n") == [1]


# --------------------------------------------------------------------------------------------
# Running them
# --------------------------------------------------------------------------------------------


def _environment(
    code: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start what the code needs and point its environment variables there."""
    if "REDIS_URL" in code:
        server = request.getfixturevalue("redis_server")
        monkeypatch.setenv("REDIS_URL", server.url.rsplit("/", 1)[0] + "/9")
    if "MONGODB_URL" in code:
        monkeypatch.setenv("MONGODB_URL", request.getfixturevalue("mongo_server").url)
    if "AWS_ENDPOINT_URL" in code or "s3://" in code:
        s3 = request.getfixturevalue("s3_server")
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
        for bucket in sorted(set(S3_BUCKET.findall(code))):
            s3.make_bucket(bucket)
    if NEEDS_PREFECT.search(code):
        request.getfixturevalue("docs_prefect_api")


#: The default ports of the servers the snippets use. A snippet that reaches one of these on
#: this machine (which may run a redis-server of its own) instead of the server the runner
#: gave it through the environment would pass here and fail elsewhere: refused.
DEFAULT_PORTS = {6379, 6380, 27017, 9000}


def _refuse_default_ports(monkeypatch: pytest.MonkeyPatch, allowed: set[int]) -> None:
    original = socket.socket.connect
    original_ex = socket.socket.connect_ex

    def check(address: Any) -> None:
        port = address[1] if isinstance(address, tuple) and len(address) >= 2 else None
        if port in DEFAULT_PORTS and port not in allowed:
            raise ConnectionRefusedError(
                f"a docs snippet connected to {address[0]}:{port}, a default port: "
                "read the server's URL from its environment variable (REDIS_URL, ...)"
            )

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        return original(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return original_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


def _run(snippets: list[Snippet], workdir: Path) -> None:
    """Run ``snippets`` in order in one namespace; each from a file of its own in ``workdir``
    (so tracebacks and ``inspect.getsource`` see the code)."""
    namespace: dict[str, Any] = {"__name__": f"docs_snippets_{uuid.uuid4().hex[:8]}"}
    for number, snippet in enumerate(snippets):
        source = workdir / f"_snippet_{number}_{snippet.page.stem}_{snippet.line}.py"
        source.write_text(snippet.code, encoding="utf-8")
        code = compile(snippet.code, str(source), "exec")
        try:
            exec(code, namespace)
        except Exception as err:
            raise SnippetFailed(
                f"the snippet at {snippet.where} raised {type(err).__name__}: {err}\n\n"
                f"{snippet.code}"
            ) from err


def _cases() -> list[Any]:
    cases = []
    for page in SNIPPET_PAGES:
        runnable = [s for s in extract(page) if s.notest is None]
        if page_rule(page) != "page":  # "each", or no rule (then reported above)
            cases += [
                pytest.param([s], id=f"{_page_id(page)}:{s.line}", marks=pytest.mark.timeout(300))
                for s in runnable
            ]
        elif runnable:
            cases.append(pytest.param(runnable, id=_page_id(page), marks=pytest.mark.timeout(600)))
    return cases


@pytest.mark.parametrize("snippets", _cases())
def test_snippets_run(
    snippets: list[Snippet],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _environment("\n".join(s.code for s in snippets), request, monkeypatch)
    given = [os.environ.get(name, "") for name in ("REDIS_URL", "MONGODB_URL", "AWS_ENDPOINT_URL")]
    _refuse_default_ports(monkeypatch, {int(p) for p in re.findall(r":(\d+)", " ".join(given))})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFECT_MEMORY_URL", raising=False)
    _run(snippets, tmp_path)
    assert os.getcwd() == str(tmp_path)


def test_the_runner_refuses_default_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """A snippet reaching a server on a default port (this machine may run one) fails."""
    _refuse_default_ports(monkeypatch, allowed=set())
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError, match="default port"):
        sock.connect(("127.0.0.1", 6379))


# --------------------------------------------------------------------------------------------
# The site: every page reachable from the index and the nav
# --------------------------------------------------------------------------------------------

MD_LINK = re.compile(r"\]\((?P<target>[^)#\s]+\.md)(?:#[^)]*)?\)")


def test_the_index_links_every_page() -> None:
    docs = ROOT / "docs"
    linked = {
        (docs / match["target"]).resolve()
        for match in MD_LINK.finditer((docs / "index.md").read_text(encoding="utf-8"))
    }
    pages = {page.resolve() for page in docs.rglob("*.md")} - {(docs / "index.md").resolve()}
    missing = sorted(str(page.relative_to(docs)) for page in pages - linked)
    assert not missing, f"docs/index.md links no page {missing}"


def test_the_nav_lists_every_page() -> None:
    docs = ROOT / "docs"
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w./-]+\.md)\s*$", nav, re.M))
    pages = {str(page.relative_to(docs)) for page in docs.rglob("*.md")}
    assert pages - listed == set(), f"pages missing from the mkdocs.yml nav: {pages - listed}"
