"""docs/derivations.md stays in step with the code: every hand-written kernel (and AdamW)
has a section linking to the file that implements it, every link resolves, every
function it names exists, its math is written in a form GitHub renders, and the key
formulas appear both in the document and in the kernel's docstring."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "derivations.md"
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
IMPLEMENTED_BY = re.compile(r"^Implemented by (.+?) in \[[^\]]+\]\(([^)]+)\)\.$", re.M)


def doc_text():
    return DOC.read_text(encoding="utf-8")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def docstring_of(path):
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def test_every_kernel_file_and_the_optimizer_are_linked():
    linked = {(DOC.parent / target).resolve() for _, target in LINK.findall(doc_text())}
    kernels = [p for p in (ROOT / "autograd" / "kernels").glob("*.py") if p.name != "__init__.py"]
    assert kernels, "no kernel files found"
    missing = [p.name for p in kernels + [ROOT / "autograd" / "optim.py"] if p.resolve() not in linked]
    assert not missing, f"docs/derivations.md has no link to: {missing}"


def test_every_link_target_and_anchor_exists():
    text = doc_text()
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    for label, target in LINK.findall(text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (DOC.parent / path).exists(), f"link [{label}]({target}) points to a missing file"
        elif anchor:
            assert anchor in anchors, f"link [{label}]({target}): no heading with that anchor"


def test_every_named_function_exists_in_the_linked_file():
    found = IMPLEMENTED_BY.findall(doc_text())
    assert len(found) >= 10, "each section should say which function implements it"
    for names, target in found:
        source = (DOC.parent / target).read_text(encoding="utf-8")
        for qualified in re.findall(r"`([A-Za-z_.]+)`", names):
            cls, _, method = qualified.rpartition(".")
            if not cls:                                   # a module-level function
                assert re.search(rf"^def {method}\(", source, re.M), f"{target} has no function {method}"
                continue
            assert re.search(rf"^class {cls}\b", source, re.M), f"{target} has no class {cls}"
            assert re.search(rf"^    def {method}\(", source, re.M), f"{target}: {cls} has no method {method}"


def test_math_is_written_the_way_github_renders_it():
    lines = doc_text().splitlines()
    in_code = False
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        if line.startswith("$$"):
            # display math: one line, opened and closed on it, nothing after
            assert line.endswith("$$") and len(line) > 4 and line.count("$$") == 2, f"line {number}: {line}"
            body = line[2:-2]
        else:
            assert line.count("$") % 2 == 0, f"line {number}: an inline $...$ is not closed: {line}"
            spans = re.findall(r"\$([^$]+)\$", line)
            for span in spans:
                assert span == span.strip(), f"line {number}: GitHub needs no space inside $ ... $: ${span}$"
            body = " ".join(spans)
        assert "<" not in body and ">" not in body, f"line {number}: write \\lt / \\gt in math, not < or >"
        assert "\\\\" not in body, f"line {number}: no \\\\ line breaks; one equation per $$ line"
        assert body.count("{") == body.count("}"), f"line {number}: unbalanced braces"
        lefts = len(re.findall(r"\\left(?![a-z])", body))         # not \leftarrow
        assert lefts == len(re.findall(r"\\right(?![a-z])", body)), f"line {number}: unbalanced \\left/\\right"


# The same formula in the kernel's docstring (plain text) and in the document (LaTeX).
AGREEMENT = {
    "autograd/kernels/linear.py": (["dx = g @ W", "dW = g^T @ x", "db = g.sum(0)"],
                                   [r"dx = g \, W", r"dW = g^\top x"]),
    "autograd/kernels/embedding.py": (["dL/dW[v, :] = sum_{n : ids[n] == v} g[n, :]"],
                                      [r"\sum_{n \,:\, \text{ids}[n] = v} g[n, :]"]),
    "autograd/kernels/layernorm.py": (["rstd * ( dxhat_j - mean_i(dxhat_i) - xhat_j * mean_i(dxhat_i xhat_i) )"],
                                      [r"\text{rstd} \left( d\hat{x}_j - \text{mean}_i(d\hat{x}_i) - \hat{x}_j \, "
                                       r"\text{mean}_i(d\hat{x}_i \, \hat{x}_i) \right)"]),
    "autograd/kernels/gelu.py": (["dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx", "du/dx = k (1 + 3 c x^2)"],
                                 [r"\frac{du}{dx} = k \left(1 + 3 c x^2\right)", "c = 0.044715"]),
    "autograd/kernels/attention.py": (["dv = P^T g", "dP = g v^T", "dS[i, j] = P[i, j] (dP[i, j] - sum_l dP[i, l] P[i, l])",
                                       "dq = dS k / sqrt(hs)", "dk = dS^T q / sqrt(hs)"],
                                      [r"dv = P^\top g", r"dP = g \, v^\top", r"dq = \frac{dS \, k}{\sqrt{hs}}",
                                       r"dk = \frac{dS^\top q}{\sqrt{hs}}"]),
    "autograd/kernels/softmax.py": (["dL/ds_j = sum_i g_i y_i (delta_ij - y_j) = y_j (g_j - sum_i g_i y_i)",
                                     "dL/ds_j = g_j - softmax(s)_j sum_i g_i = g_j - exp(y_j) sum_i g_i"],
                                    [r"y_j \left( g_j - \sum_i g_i \, y_i \right)", r"g_j - \exp(y_j) \sum_i g_i"]),
    "autograd/kernels/cross_entropy.py": (["dL/dz_ij = g * (softmax(z_i)_j - [j == t_i]) / n"],
                                          [r"\frac{g}{n} \left( \text{softmax}(z_i)_j - [j = t_i] \right)"]),
    "autograd/kernels/linear_cross_entropy.py": (["dL/dx   = g P W", "dL/dW   = g P^T x"],
                                                 [r"g \, P \, W", r"g \, P^\top x"]),
    "autograd/kernels/dropout.py": (["dL/dx_i = g_i * mask_i"], [r"g_i \, \text{mask}_i"]),
    "autograd/kernels/adamw.py": (["m   <- m + (1 - beta1) (g - m)", "v   <- beta2 v + (1 - beta2) g^2",
                           "p   <- p - lr * m^ / (sqrt(v^) + eps)"],
                          [r"m \leftarrow m + (1 - \beta_1)(g - m)", r"v \leftarrow \beta_2 \, v + (1 - \beta_2) \, g^2",
                           r"p \leftarrow p - \text{lr} \, \frac{\hat{m}}{\sqrt{\hat{v}} + \epsilon}"]),
}


@pytest.mark.parametrize("path", sorted(AGREEMENT))
def test_the_docstring_and_the_document_state_the_same_formulas(path):
    in_docstring, in_doc = AGREEMENT[path]
    docstring = " ".join(docstring_of(ROOT / path).split())   # whitespace-insensitive
    text = doc_text()
    for formula in in_docstring:
        assert " ".join(formula.split()) in docstring, f"{path}'s docstring no longer says: {formula}"
    for formula in in_doc:
        assert formula in text, f"docs/derivations.md no longer says: {formula} (the formula of {path})"


def test_every_kernel_file_is_covered_by_the_agreement_check():
    kernels = {f"autograd/kernels/{p.name}" for p in (ROOT / "autograd" / "kernels").glob("*.py")
               if p.name != "__init__.py"}
    assert kernels <= set(AGREEMENT), f"add the key formulas of {sorted(kernels - set(AGREEMENT))} to AGREEMENT"
