"""Build a chapter notebook from a plain-text source (cells separated by lines '# %% [markdown]' / '# %%').

Usage: python tools/nbbuild.py notebooks/src/01_first_vae.py notebooks/01_first_vae.ipynb
The source is the readable, diffable form; the .ipynb is what the book executes and stores outputs in.
"""

import sys

import nbformat


def build(src: str, dst: str) -> None:
    cells, kind, buf = [], None, []

    def flush():
        text = "\n".join(buf).strip("\n")
        if kind is not None and text:
            if kind == "markdown":
                text = "\n".join(
                    line[2:] if line.startswith("# ") else line.lstrip("#")
                    for line in text.splitlines()
                )
                cells.append(nbformat.v4.new_markdown_cell(text))
            else:
                cells.append(nbformat.v4.new_code_cell(text))

    for line in open(src, encoding="utf-8").read().splitlines():
        if line.startswith("# %%"):
            flush()
            kind, buf = ("markdown" if "[markdown]" in line else "code"), []
        else:
            buf.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata.update(
        {
            "kernelspec": {
                "name": "python3",
                "display_name": "Python 3",
                "language": "python",
            },
            "language_info": {"name": "python"},
        }
    )
    nbformat.write(nb, dst)


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2])
