"""XMP as bytes: read an XMP packet into elements that know where they sit in the file, and
change it by splicing, so that everything facebatch did not write stays byte for byte.

Why not a round trip through an XMP library: exiv2 (pyexiv2) and Exempi (python-xmp-toolkit)
parse the whole packet into a model and serialise it again in their own layout, so a sidecar
written by digiKam or Lightroom comes back with every other field re-indented, re-ordered and
re-quoted (measured in benchmarks/xmp_sidecars.py). Here the standard library's expat gives each
element's byte offsets; an edit is "remove these bytes" or "insert these bytes here".

    parse_packet(data) -> Packet       elements of the packet, with byte spans; XmpError if not XMP
    Packet.properties(uri, local)      top-level properties (children of rdf:Description)
    struct_value / struct_fields / array_items   the RDF forms of structs and arrays
    Element + render                   new XML fragments, declaring the prefixes they use
    Edits                              splices, applied back to front
    embedded_xmp(image)                the XMP packet inside a photo (JPEG, PNG, WebP, TIFF, HEIF)
"""

from __future__ import annotations

import re
import xml.parsers.expat
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XML_NS = "http://www.w3.org/XML/1998/namespace"
MWG_RS = "http://www.metadataworkinggroup.com/schemas/regions/"
ST_AREA = "http://ns.adobe.com/xmp/sType/Area#"
ST_DIM = "http://ns.adobe.com/xap/1.0/sType/Dimensions#"
MP = "http://ns.microsoft.com/photo/1.2/"
MPRI = "http://ns.microsoft.com/photo/1.2/t/RegionInfo#"
MPREG = "http://ns.microsoft.com/photo/1.2/t/Region#"
IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
DIGIKAM = "http://www.digikam.org/ns/1.0/"
LIGHTROOM = "http://ns.adobe.com/lightroom/1.0/"
# facebatch's own namespace marks what it wrote (a name, not a web address: .invalid never resolves).
FACEBATCH = "http://ns.facebatch.invalid/xmp/1.0/"

# The prefixes facebatch writes with (readers go by namespace URI, never by prefix).
PREFIXES = {
    "rdf": RDF,
    "mwg-rs": MWG_RS,
    "stArea": ST_AREA,
    "stDim": ST_DIM,
    "MP": MP,
    "MPRI": MPRI,
    "MPReg": MPREG,
    "Iptc4xmpExt": IPTC_EXT,
    "digiKam": DIGIKAM,
    "lr": LIGHTROOM,
    "facebatch": FACEBATCH,
}
ARRAY_KINDS = ("Bag", "Seq", "Alt")

# A new sidecar: the packet wrapper and an empty rdf:RDF that the merge fills.
EMPTY_PACKET = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="facebatch">\n'
    f' <rdf:RDF xmlns:rdf="{RDF}">\n'
    " </rdf:RDF>\n"
    "</x:xmpmeta>\n"
    '<?xpacket end="w"?>\n'
).encode()


class XmpError(Exception):
    """Bytes that are not an XMP packet facebatch can read (the message says why)."""


Name = tuple[str, str]  # (namespace URI, local name); "" for no namespace


@dataclass(eq=False)
class Node:
    """One element of the packet and where its bytes are."""

    name: Name
    qname: str  # as written, prefix included
    attrs: dict[Name, str]
    scope: dict[str, str]  # prefix -> namespace URI in force inside this element
    start: int  # offset of its '<'
    open_end: int  # just after its start tag's '>'
    close_start: int = -1  # offset of its end tag ('</'), open_end when it is empty (<a/>)
    end: int = -1  # just after its end tag
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None
    text_parts: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.close_start == self.open_end and self.end == self.open_end

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def is_(self, uri: str, local: str) -> bool:
        return self.name == (uri, local)

    def child(self, uri: str, local: str) -> Node | None:
        return next((c for c in self.children if c.is_(uri, local)), None)

    def attr(self, uri: str, local: str) -> str | None:
        return self.attrs.get((uri, local))


def _split_name(raw: str) -> tuple[Name, str]:
    """expat's 'uri local prefix' (namespace_prefixes on) -> ((uri, local), qname)."""
    parts = raw.split(" ")
    if len(parts) == 1:
        return ("", parts[0]), parts[0]
    if len(parts) == 2:
        return (parts[0], parts[1]), parts[1]
    return (parts[0], parts[1]), f"{parts[2]}:{parts[1]}"


# A tag up to its '>', which may also stand inside quoted attribute values.
_TAG = re.compile(rb"""<(?:[^"'>]|"[^"]*"|'[^']*')*>""")


def _tag_end(data: bytes, at: int) -> int:
    """Offset just after the '>' closing the tag that starts at `at`."""
    match = _TAG.match(data, at)
    if match is None:
        raise XmpError("a tag is not closed")
    return match.end()


@dataclass
class Packet:
    data: bytes
    root: Node  # the document element (x:xmpmeta, or rdf:RDF itself)
    rdf: Node  # rdf:RDF

    def descriptions(self) -> list[Node]:
        return [c for c in self.rdf.children if c.is_(RDF, "Description")]

    def properties(self, uri: str, local: str) -> list[Node]:
        """Element-form top-level properties with this name (XMP allows one; a packet may hold more)."""
        return [p for d in self.descriptions() for p in d.children if p.is_(uri, local)]

    def about(self) -> str:
        """The rdf:about every Description of a packet shares (usually "")."""
        for d in self.descriptions():
            value = d.attr(RDF, "about")
            if value is not None:
                return value
        return ""


def parse_packet(data: bytes) -> Packet:
    """Elements of an XMP packet with their byte spans. Only UTF-8 (every sidecar writer's
    encoding) can be spliced; a DOCTYPE is refused (XMP never has one: it is how XML bombs come)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or data[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
        raise XmpError("not UTF-8 (UTF-16/32 XMP is not merged)")
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    parser.namespace_prefixes = True
    stack: list[Node] = []
    roots: list[Node] = []
    pending: dict[str, str] = {}

    def on_namespace(prefix: str | None, uri: str | None) -> None:
        pending[prefix or ""] = uri or ""

    def on_start(raw: str, raw_attrs: dict[str, str]) -> None:
        at = parser.CurrentByteIndex
        name, qname = _split_name(raw)
        parent = stack[-1] if stack else None
        scope = {**(parent.scope if parent else {}), **pending}
        pending.clear()
        attrs = {_split_name(k)[0]: v for k, v in raw_attrs.items()}
        node = Node(name, qname, attrs, scope, at, _tag_end(data, at), parent=parent)
        (parent.children if parent else roots).append(node)
        stack.append(node)

    def on_end(_raw: str) -> None:
        node = stack.pop()
        at = parser.CurrentByteIndex
        if at == node.open_end and data[node.open_end - 2:node.open_end] == b"/>":
            node.close_start = node.end = node.open_end
        else:
            node.close_start, node.end = at, _tag_end(data, at)

    def on_text(text: str) -> None:
        if stack:
            stack[-1].text_parts.append(text)

    def on_doctype(*_: Any) -> None:
        raise XmpError("has a DOCTYPE (XMP never does)")

    parser.StartNamespaceDeclHandler = on_namespace
    parser.StartElementHandler = on_start
    parser.EndElementHandler = on_end
    parser.CharacterDataHandler = on_text
    parser.StartDoctypeDeclHandler = on_doctype
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as error:
        raise XmpError(f"not well-formed XML ({xml.parsers.expat.errors.messages[error.code]}, "
                       f"line {error.lineno})") from None
    if not roots:
        raise XmpError("no XML element")
    rdf = _find(roots[0], RDF, "RDF")
    if rdf is None:
        raise XmpError("no rdf:RDF element")
    return Packet(data, roots[0], rdf)


def _find(node: Node, uri: str, local: str) -> Node | None:
    if node.is_(uri, local):
        return node
    for child in node.children:
        found = _find(child, uri, local)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------- RDF forms


def struct_value(node: Node) -> Node:
    """The element whose attributes and children are a struct's fields: an rdf:Description
    inside the property, or the property itself (rdf:parseType="Resource", or attributes only)."""
    description = node.child(RDF, "Description")
    return description if description is not None else node


def struct_fields(node: Node) -> dict[Name, str]:
    """A struct's simple fields, written as attributes or as child elements with text."""
    value = struct_value(node)
    fields = {k: v for k, v in value.attrs.items() if k[0] not in (RDF, XML_NS)}
    for child in value.children:
        if not child.children:
            fields.setdefault(child.name, child.attr(RDF, "resource") or child.text.strip())
    return fields


def struct_child(node: Node, uri: str, local: str) -> Node | None:
    return struct_value(node).child(uri, local)


def array_of(node: Node) -> Node | None:
    """The rdf:Bag/Seq/Alt of an array property, or None."""
    return next((c for c in node.children if c.name[0] == RDF and c.name[1] in ARRAY_KINDS), None)


def array_items(node: Node) -> list[Node]:
    array = array_of(node)
    return [] if array is None else [c for c in array.children if c.is_(RDF, "li")]


def accepts_fields(node: Node) -> bool:
    """Whether child elements can be added to this struct value without changing its RDF form:
    an rdf:Description, or an element with rdf:parseType="Resource"."""
    return node.is_(RDF, "Description") or node.attr(RDF, "parseType") == "Resource"


# --------------------------------------------------------------------------- new fragments


@dataclass
class Element:
    """An element facebatch writes: qname with one of PREFIXES, attributes, children or text."""

    qname: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Element] = field(default_factory=list)
    text: str | None = None

    def prefixes(self) -> set[str]:
        used = {self.qname.split(":")[0]} | {a.split(":")[0] for a in self.attrs}
        for child in self.children:
            used |= child.prefixes()
        return used


def render(element: Element, indent: str, scope: dict[str, str], step: str = " ") -> str:
    """The element as text at `indent`, declaring (on itself) each prefix it uses that `scope`
    does not already bind to the same namespace."""
    declare = {p: PREFIXES[p] for p in sorted(element.prefixes()) if scope.get(p) != PREFIXES[p]}
    return _render(element, indent, step, declare)


def _render(element: Element, indent: str, step: str, declare: dict[str, str]) -> str:
    attrs = [f"{k}={quoteattr(v)}" for k, v in element.attrs.items()]
    attrs += [f"xmlns:{p}={quoteattr(uri)}" for p, uri in declare.items()]
    head = element.qname + "".join(f" {a}" for a in attrs)
    if element.text is not None:
        return f"<{head}>{escape(element.text)}</{element.qname}>"
    if not element.children:
        return f"<{head}/>"
    inner = indent + step
    body = "".join(f"\n{inner}{_render(c, inner, step, {})}" for c in element.children)
    return f"<{head}>{body}\n{indent}</{element.qname}>"


def indent_of(data: bytes, node: Node) -> str:
    """The whitespace in front of an element on its line ('' when something else is there)."""
    line_start = data.rfind(b"\n", 0, node.start) + 1
    lead = data[line_start:node.start]
    return lead.decode() if lead.strip(b" \t") == b"" else ""


def child_indent(data: bytes, node: Node) -> str:
    """Indentation for a new child of `node`: its last child's, else one more space than its own."""
    if node.children:
        return indent_of(data, node.children[-1])
    return indent_of(data, node) + " "


# --------------------------------------------------------------------------- splices


@dataclass
class Edits:
    """Byte splices on one packet, applied back to front so offsets stay valid."""

    data: bytes
    splices: list[tuple[int, int, bytes]] = field(default_factory=list)
    removed: list[Node] = field(default_factory=list)

    def remove(self, node: Node) -> None:
        """Remove an element and the whitespace before it (the line it stood on)."""
        self.removed.append(node)
        self.splices.append((self._gap_start(node), node.end, b""))

    def keep(self, node: Node) -> None:
        """Take back the removal of `node`."""
        self.removed.remove(node)
        self.splices.remove((self._gap_start(node), node.end, b""))

    def append(self, parent: Node, fragments: list[str], indent: str) -> None:
        """New last children of `parent` (after those not removed), each on its own line at `indent`."""
        if not fragments:
            return
        text = "".join(f"\n{indent}{f}" for f in fragments)
        if parent.empty:  # <a/> becomes <a>...</a>
            closing = f"\n{indent_of(self.data, parent)}</{parent.qname}>"
            self.splices.append((parent.open_end - 2, parent.open_end, f">{text}{closing}".encode()))
            return
        kept = [c for c in parent.children if c not in self.removed]
        if not parent.children and b"\n" not in self.data[parent.open_end:parent.close_start]:
            text += "\n" + indent_of(self.data, parent)  # <a></a> on one line: </a> gets its own
        at = kept[-1].end if kept else parent.open_end
        self.splices.append((at, at, text.encode()))

    def _gap_start(self, node: Node) -> int:
        parent = node.parent
        assert parent is not None
        index = parent.children.index(node)
        before = parent.children[index - 1].end if index else parent.open_end
        return before if self.data[before:node.start].strip() == b"" else node.start

    def apply(self) -> bytes:
        out = self.data
        for start, end, text in sorted(self.splices, key=lambda s: (s[0], s[1]), reverse=True):
            out = out[:start] + text + out[end:]
        return out


# --------------------------------------------------------------------------- XMP inside a photo


def embedded_xmp(image: Any) -> bytes | None:
    """The XMP packet Pillow found in an opened photo (JPEG APP1, PNG iTXt, WebP, TIFF tag 700,
    HEIF), or None. JPEG's extended XMP (a second packet for more than 64 KB) is not read."""
    info = getattr(image, "info", {}) or {}
    packet = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if packet is None:
        tags = getattr(image, "tag_v2", None)
        packet = tags.get(700) if tags is not None else None
    if isinstance(packet, str):
        packet = packet.encode("utf-8")
    if isinstance(packet, (bytes, bytearray)) and packet.strip():
        return bytes(packet)
    return None
