"""Markdown straight to unstructured elements, from markdown-it's token stream.

Markdown already says what each block is — a heading, a paragraph, a list item, a table,
code — so rendering it to HTML and having unstructured's HTML partitioner re-parse it and
re-classify every block with its narrative-text heuristics (half of `partition_html`'s
time) spends most of the work rediscovering what the tokens state. The elements are
unstructured's own classes (Title, NarrativeText, ListItem, Table, CodeSnippet), so
`chunk_by_title` treats them exactly as it treats partitioned HTML.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unstructured.documents.elements import Element

_TAG = re.compile(r"<[^>]+>")


def _inline_text(token: Any) -> str:
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts).strip()


def markdown_elements(text: str) -> list[Element]:
    """Elements of a CommonMark (+ tables) document, in reading order."""
    from markdown_it import MarkdownIt
    from unstructured.documents.elements import (
        CodeSnippet,
        ElementMetadata,
        ListItem,
        NarrativeText,
        Table,
        Text,
        Title,
    )

    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(text)
    elements: list[Element] = []
    # Text of the list items being read, innermost last; an item's own text is emitted
    # before a list nested in it, so reading order is kept.
    items: list[list[str]] = []

    def flush_item() -> None:
        if items and items[-1]:
            elements.append(ListItem(text=" ".join(items[-1])))
            items[-1] = []

    i = 0
    while i < len(tokens):
        token = tokens[i]
        kind = token.type
        if kind == "heading_open":
            content = _inline_text(tokens[i + 1])
            if content:
                depth = int(token.tag[1:]) - 1
                elements.append(Title(text=content, metadata=ElementMetadata(
                    category_depth=depth)))
            i += 3
            continue
        if kind in ("bullet_list_open", "ordered_list_open"):
            flush_item()
        elif kind == "list_item_open":
            items.append([])
        elif kind == "list_item_close":
            flush_item()
            items.pop()
        elif kind == "inline":
            content = _inline_text(token)
            if content:
                if items:
                    items[-1].append(content)
                else:
                    elements.append(NarrativeText(text=content))
        elif kind in ("fence", "code_block") and token.content.strip():
            elements.append(CodeSnippet(text=token.content.rstrip()))
        elif kind == "html_block":
            content = " ".join(_TAG.sub(" ", token.content).split())
            if content:
                elements.append(Text(text=content))
        elif kind == "table_open":
            end = i
            while tokens[end].type != "table_close":
                end += 1
            rows: list[str] = []
            cells: list[str] = []
            for inner in tokens[i:end]:
                if inner.type == "inline":
                    cells.append(_inline_text(inner))
                elif inner.type == "tr_close":
                    rows.append(" ".join(c for c in cells if c))
                    cells = []
            html = md.renderer.render(tokens[i:end + 1], md.options, {})
            elements.append(Table(text="\n".join(r for r in rows if r),
                                  metadata=ElementMetadata(text_as_html=html.strip())))
            i = end + 1
            continue
        i += 1
    return elements
