"""Which connected pieces of an ink mask are the digit: paper edges, ruled lines and printed
box edges out, the main piece and the strokes near it in.

Masks are (H, W) bool; connected pieces are OpenCV's 8-connected components.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

JOIN_GAP, JOIN_MASS, DOT = 0.5, 0.05, 2.5  # select_digit: which pieces join the digit
# A ruled line or a box edge is straight and long: a run over this fraction of the frame.
LINE_SPAN = 0.6
# A box holds the digit when it reaches around it, give or take this fraction of its size (a
# digit written over the box's edge).
LINE_OVERHANG = 0.15
LINE_FRAME = 0.85  # ... a rule or a grid crosses this fraction of the frame
LINE_GRID = 256  # px: lines are found on the mask shrunk to this (they need no detail)
# A printed box's piece covers under BOX_FILL of its bounding box (a digit that touches the box
# joins its piece: a 4's stem and bar with a 4 px box, 0.47); dropped, it goes only as deep as
# BOX_BAND of its size from its sides, where the box's edges are.
BOX_FILL, BOX_BAND = 0.6, 0.1
RULE_THIN = 0.6  # a rule within the digit's span is thinner than this x its strokes
RULE_BEYOND = 0.25  # ... and a rule runs on past the digit by this x its size
BLOTCH = 0.25  # a "line" whose pixels cover this share of the frame is a blotch of the page
MANY = 512  # pieces: past this, specks are told without comparing every pair of boxes
CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)  # a pixel's 4 neighbours


@dataclass
class Pieces:
    """Connected pieces of a mask: per piece (index k = label k + 1) ink, area, box, border."""

    labels: np.ndarray
    mass: np.ndarray
    area: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    contact: np.ndarray  # longest run along one image side, fraction of that side

    @classmethod
    def of(cls, mask: np.ndarray, ink: np.ndarray) -> Pieces:
        # Grana's block-based algorithm: the same labels and stats as OpenCV's default
        # (Spaghetti) on 300 random masks, in 0.23 ms instead of 0.59 on the drawing page's
        # 280x280 canvas (one thread, 2-core EPYC).
        n, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
            mask.astype(np.uint8), 8, cv2.CV_32S, cv2.CCL_GRANA
        )
        n -= 1
        st = stats[1:].astype(np.int64)
        contact: np.ndarray
        mass: np.ndarray
        if n <= 1:  # one piece (a clean drawing, often): no bincount over the labels needed
            contact = np.zeros(n)
            mass = np.array([float(ink[labels == 1].sum())]) if n else np.zeros(0)
        else:
            sides = (labels[0], labels[-1], labels[:, 0], labels[:, -1])
            contact = np.max([np.bincount(e, minlength=n + 1)[1:] / len(e) for e in sides], 0)
            mass = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=n + 1)[1:]
        x, y, w, h = st[:, 0], st[:, 1], st[:, 2], st[:, 3]
        return cls(labels, mass, st[:, 4], x, y, x + w, y + h, contact)

    def __len__(self) -> int:
        return len(self.area)

    @functools.cached_property
    def dots(self) -> np.ndarray:
        """Specks of dust: solid blobs, pieces no longer than ``DOT`` times their own width
        (2 x area / boundary: a filled square is 2 of its widths long, a dash or a ring many)
        and under half as long as the longest piece. A dark speck beside a thin pen's digit
        outweighs its strokes, and was taken for a digit of its own ("0001" for a 1, the
        speck a filled 0): weighed by ink, specks set the line's height and the digit's
        share of the page. The longest piece is never one (a digit from a blurry 8 px scan
        is a blob a few strokes wide), nor one within its length of a stroke. Measured
        against the page's strokes instead, a 2's detached top stroke was a speck beside a fat
        8, and the 2 read as a 4."""
        if len(self) <= 1:
            return np.zeros(len(self), bool)
        length = np.maximum(self.x1 - self.x0, self.y1 - self.y0)
        ink = (self.labels > 0).astype(np.uint8)
        edge = ink > cv2.erode(ink, CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        boundary = np.bincount(self.labels[edge], minlength=len(self) + 1)[1:]
        width = 2.0 * self.area / np.maximum(boundary, 1)
        blob = (length <= DOT * width) & (2 * length < length.max())
        if len(self) > MANY:
            return blob  # a texture, not a page of digits: no pairs of boxes
        # ... and apart from the strokes: a short thick dash beside a 7 is its own.
        dx = np.maximum(self.x0[None] - self.x1[:, None], self.x0[:, None] - self.x1[None])
        dy = np.maximum(self.y0[None] - self.y1[:, None], self.y0[:, None] - self.y1[None])
        near = np.maximum(dx, dy) <= length[:, None]
        return blob & ~(near & ~blob[None]).any(axis=1)

    def edge_like(self) -> np.ndarray:
        """Paper edges: solid pieces lying along an image side for 40 % of its length or more.

        A strip of table or the page's shadow in a photo does, and fills its bounding box; a
        digit in a tight crop may touch a side along a stroke (a 7's bar) but its strokes fill
        a third of its box or less.
        """
        fill = self.area / np.maximum(1, (self.x1 - self.x0) * (self.y1 - self.y0))
        return (self.contact >= 0.4) & (fill >= 0.7)


def edge_bands(
    mask: np.ndarray,
    depth: float = 0.15,
    full: float = 0.9,
    paper: float = 0.25,
    reach: float = 0.1,
) -> np.ndarray:
    """Paper edges as bands: rows (columns) along an image side that are ink over their whole
    length, with paper after them.

    ``Pieces.edge_like`` misses a strip of table that the smoothing has joined to a digit
    written close to it (a small photo); cutting whole rows does not. A band is at most
    ``depth`` of the image deep, each row at least ``full`` covered, followed within two rows
    by a row of paper (``paper`` ink at most: a digit written up against the strip fills
    16-19 % of the rows after it; at 0.15, 122 of 5,000 photos of training digits were read
    wrong, not 121, and 11 form cells of 500, not 10). A digit in a tight crop can fill its
    top rows (a 7's bar) but then reaches the opposite side as well, over ``reach`` of it or
    more, and is left alone. A digit of a photo that only touches the opposite side (a
    stroke's tip, 4-6 % of it) does not save the strip: with any ink there counted as reaching
    it, 3 of 5,000 photos of training digits read the strip as part of the digit (a 5 read as
    a 2), and none of 500 tight or low-resolution crops of each kind has a band this rule cuts.
    """
    out = np.zeros_like(mask, dtype=bool)
    views = (lambda a: a, lambda a: a[::-1], lambda a: a.T, lambda a: a.T[::-1])
    for view in views:
        m, o = view(mask), view(out)
        cover = m.mean(axis=1)
        n = len(cover)
        d = 0
        while d < max(1, int(depth * n)) and cover[d] >= full:
            d += 1
        if d == 0 or d >= n - 3:
            continue
        e = d
        while e < d + 2 and cover[e] > paper:
            e += 1
        if cover[e] > paper or reach <= cover[-1] < full:
            continue
        o[:e] = True
    return out


def drop_lines(mask: np.ndarray, faint: np.ndarray) -> np.ndarray:
    """The mask without ruled lines, squared paper's grid and printed box edges.

    Lines are runs of ``faint`` ink (a lower threshold than ``mask``'s: a pale blue rule is
    often under the digit's threshold in places) straight along a row or a column for
    ``LINE_SPAN`` of the frame. Of those, a rule or a grid crosses ``LINE_FRAME`` of the
    frame, and a printed box is a rectangle's outline over half of it each way; a digit's own
    stroke (a 1 that fills a small photo) is neither and stays. Rules go when there are two or
    more (ruled paper; a single stroke across a tight crop, a 2's base or a 4's stem, is the
    digit's own and goes only when it touches nothing else); a box or a grid goes when it
    holds the digit. Of a rule or a grid, the pixels where the ink reaches further across the
    line than the line itself stay (a stroke lies on it or crosses it); where a dropped line
    crossed a stroke, the stroke is bridged again across the line's width.

    On 1,000 pages of training digits read by a model trained on 14,500 digits
    (``benchmarks/handwriting.py``): ruled 95.7 -> 97.7 % (13 -> 4 read as several digits),
    squared 96.6 -> 97.8 % (14 -> 2).
    """
    h, w = mask.shape
    f = min(1.0, LINE_GRID / max(h, w))
    small = faint.astype(np.uint8)
    if f < 1:
        size = (max(1, round(w * f)), max(1, round(h * f)))
        shrunk = cv2.resize(small * 255, size, interpolation=cv2.INTER_AREA)
        small = (shrunk > 64).astype(np.uint8)
    sh, sw = small.shape
    if min(sh, sw) < 8:
        return mask
    # A slant of a row over the run is tolerated: the mask is thickened across the line first.
    found = []
    for axis, n in ((1, sw), (0, sh)):
        grow = np.ones((3, 1) if axis == 1 else (1, 3), np.uint8)
        run = (max(3, int(LINE_SPAN * n)), 1) if axis == 1 else (1, max(3, int(LINE_SPAN * n)))
        opened = cv2.morphologyEx(
            cv2.dilate(small, grow), cv2.MORPH_OPEN, np.ones(run[::-1], np.uint8)
        )
        found.append(np.asarray(opened, np.uint8) & small)
    lines_small = found[0] | found[1]
    if not lines_small.any():
        return mask
    lines = lines_small.astype(bool)
    if f < 1:
        lines = cv2.resize(lines_small * 255, (w, h), interpolation=cv2.INTER_LINEAR) > 0
    lines &= faint
    lines = cv2.dilate(lines.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & faint
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lines.astype(np.uint8), connectivity=8)
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    # Rules and grids run across the frame; a printed box is a hollow frame around the digit.
    # A digit's own stroke (a 1 that fills a small photo) is neither, and stays.
    across = (bw >= LINE_FRAME * w) | (bh >= LINE_FRAME * h)
    across[0] = False
    horizontal = across & (bw >= bh)
    # Ruled paper shows two rules or more; one stroke across a tight crop (a 2's base, a 7's
    # bar, a 4's stem) is the digit's own, and goes only when it touches nothing else.
    rules = (horizontal & (horizontal.sum() >= 2)) | (
        across & ~horizontal & ((across & ~horizontal).sum() >= 2)
    )
    box = (bw >= 0.5 * w) & (bh >= 0.5 * h) & (area < BOX_FILL * bw * bh)
    box[0] = False
    for k in np.nonzero(box)[0]:
        box[k] = framed(labels[y[k] : y[k] + bh[k], x[k] : x[k] + bw[k]] == k)
    candidate = across | box
    if not candidate.any():
        return mask
    rest = mask & ~candidate[labels]
    if rest.sum() < 0.02 * mask.sum():
        return mask  # the lines are all there is
    combs = np.nonzero(across & ~box & ~rules)[0]
    width = stroke_width(rest) if len(combs) else 0.0
    for k in combs:
        # Rules joined into one piece by a line across them (a margin line) are rules too: a
        # comb, two rules or more one way (thin bands across the frame with paper beside
        # them), and a grid, two or more both ways. A digit's own strokes across a tight crop
        # are as wide as its strokes, or have ink beside them. On 400 ruled pages of training
        # digits: 18 -> 12 errors (the margin line read as a 1). A grid goes since the
        # strokes that lie along its lines stay (below): on 600 squared pages, 17 -> 11
        # errors, 8 -> 2 read as several (the grid's cells read as 8s beside the digit).
        piece = labels[y[k] : y[k] + bh[k], x[k] : x[k] + bw[k]] == k
        rows = lone_bands(piece.sum(axis=1), w, width)
        cols = lone_bands(piece.sum(axis=0), h, width)
        rules[k] = max(rows, cols) >= 2
    if rules.any():
        rules &= ruled(rest, x, y, bw, bh, area, horizontal)
    ys, xs = np.nonzero(mask & ~(rules | box)[labels])
    if len(ys) == 0:
        return mask  # rules and boxes are all there is (a crop of a form's cell edges)
    ry0, ry1, rx0, rx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    margin = LINE_OVERHANG * max(ry1 - ry0, rx1 - rx0)
    near_rest = cv2.dilate(rest.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    drop = np.zeros(n, bool)
    for k in np.nonzero(candidate)[0]:
        piece = labels[y[k] : y[k] + bh[k], x[k] : x[k] + bw[k]] == k
        touches = (piece & near_rest[y[k] : y[k] + bh[k], x[k] : x[k] + bw[k]]).any()
        holds = x[k] <= rx0 + margin and x[k] + bw[k] >= rx1 - margin
        holds &= y[k] <= ry0 + margin and y[k] + bh[k] >= ry1 - margin
        # Rules go (the strokes they cross are bridged below); a box or a grid when it holds
        # the digit; a single line across when it touches nothing else.
        drop[k] = not touches or bool(rules[k]) or (bool(box[k]) and holds)
        if drop[k] and area[k] > BLOTCH * h * w:
            # A blotch of the page under the faint threshold (a light fall-off that the
            # paper's fit missed) has runs along every row and joins the digit's strokes into
            # a "line" across the frame; what it holds of the mask is the digit, a fraction of
            # the frame, not a line's length (a thin-pen 8 beside dark specks was dropped
            # whole, and the specks were read as "000").
            ys_k, xs_k = np.nonzero(piece & mask[y[k] : y[k] + bh[k], x[k] : x[k] + bw[k]])
            reach = max(np.ptp(xs_k) / w, np.ptp(ys_k) / h) if len(ys_k) else 0.0
            drop[k] = reach >= LINE_SPAN
    if not drop.any():
        return mask
    gone = drop[labels]
    for k in np.nonzero(drop & box)[0]:
        # Only the box's outline: a digit that touches the box is in its piece too. Dropped
        # whole, or not taken for a box at all (fill under 0.3), such a box stayed with its
        # digit: 16 -> 8 errors on 400 form cells of training digits; a band of 0.05 left
        # thick edges (51).
        band = max(4, round(BOX_BAND * min(bw[k], bh[k])))
        inside = (slice(y[k] + band, y[k] + bh[k] - band), slice(x[k] + band, x[k] + bw[k] - band))
        gone[inside] &= labels[inside] != k
    # Where the ink reaches further across a rule than the rule itself, a stroke lies on it
    # (a 7's stem along the margin line, a stroke crossing it): those pixels stay.
    # Only the window of the digit's ink and the line pixels it touches is looked at (the
    # runs over a whole 512 px page took 12 ms).
    lined = gone & np.r_[False, ~box[1:]][labels]
    beside = cv2.dilate((mask & ~lined).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    touched = lined & beside
    if touched.any():
        near = touched | (mask & ~gone)
        ys, xs = np.flatnonzero(near.any(1)), np.flatnonzero(near.any(0))
        win = np.s_[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        ink, line = mask[win], lined[win]
        across_ink = np.minimum(runs(ink, 0), runs(ink, 1))
        across_line = np.minimum(runs(line, 0), runs(line, 1))
        gone[win] &= ~(line & (across_ink > across_line + 1))
    out = mask & ~gone
    # Bridge strokes across a dropped line: a closing across it (9 px: a rule 1-3 px wide,
    # grown by 1 px on each side by the dilation above, and by up to 1 / f px on each side
    # where the lines were found shrunk), kept inside the line only. With 9 px whatever the
    # size, a slanted 1 crossing a rule on a 570 px page was cut in two and read as "11".
    span = 9 + 2 * int(np.ceil(1 / f)) if f < 1 else 9
    for kernel in (np.ones((span, 1), np.uint8), np.ones((1, span), np.uint8)):
        closed = cv2.morphologyEx(out.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
        out |= closed & gone & mask
    return out


def runs(mask: np.ndarray, axis: int) -> np.ndarray:
    """The length of the run of True along ``axis`` through each pixel (0 off the mask)."""
    m = mask if axis == 0 else np.ascontiguousarray(mask.T)
    n = m.shape[0]
    idx = np.arange(n, dtype=np.int32)[:, None]
    edge = np.zeros((1, m.shape[1]), bool)
    starts = m & ~np.vstack([edge, m[:-1]])
    ends = m & ~np.vstack([m[1:], edge])
    start = np.maximum.accumulate(np.where(starts, idx, 0), axis=0)
    end = np.minimum.accumulate(np.where(ends, idx, n)[::-1], axis=0)[::-1]
    out = np.where(m, end - start + 1, 0)
    return out if axis == 0 else out.T


def ruled(
    rest: np.ndarray, x: np.ndarray, y: np.ndarray, bw: np.ndarray, bh: np.ndarray,
    area: np.ndarray, horizontal: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Which lines across the frame can be a sheet's rules rather than the digit's own strokes,
    given ``rest``, the ink off the lines: a rule runs on past the digit (by ``RULE_BEYOND``
    of its size), or is thinner than its strokes (under ``RULE_THIN`` of their width).

    In a crop cut tight to a 3 the top and bottom strokes cross the frame too, two "rules";
    dropped, the model saw a 3's middle and read a 4 (7 of 8 errors on 500 tight crops of
    training digits). A 2's base reaches past its diagonal's foot by a tenth or more of the
    digit's width: with 0.1 there, 4 of the 35 errors on 2,000 tight crops were 2s read as 7s."""
    rows, cols = np.flatnonzero(rest.any(1)), np.flatnonzero(rest.any(0))
    if len(rows) == 0:
        return np.ones(len(x), bool)
    width = stroke_width(rest)
    out = np.ones(len(x), bool)
    for k in range(1, len(x)):
        if horizontal[k]:
            lo, hi, a0, a1, length = x[k], x[k] + bw[k], cols[0], cols[-1] + 1, bw[k]
        else:
            lo, hi, a0, a1, length = y[k], y[k] + bh[k], rows[0], rows[-1] + 1, bh[k]
        margin = RULE_BEYOND * (a1 - a0)
        beyond = lo < a0 - margin or hi > a1 + margin
        out[k] = beyond or area[k] / max(1, length) < RULE_THIN * width
    return out


def lone_bands(cover: np.ndarray, length: int, width: float) -> int:
    """Rules in a piece: bands of rows (``cover``: its ink per row) across ``LINE_FRAME`` of
    the frame's ``length``, with paper over half of the rows two rows before and after (lines
    crossing them, and a digit's strokes, are ink there; a blurred digit cut tight is ink
    across its whole width), and thinner than the digit's strokes (``width``).

    Two such bands count when under ``RULE_THIN`` of the strokes' width (a 3 cut tight has two
    strokes across its frame, as wide as its others); three or more when under the width
    itself: no digit has three strokes across its frame, and a dark pen's rules in a small
    photo were 5 px deep against strokes 7.5 px wide (the comb stayed, and a 6 was read as a
    4, a 0 as "117")."""
    on = cover >= LINE_FRAME * length
    edges = np.flatnonzero(np.diff(np.r_[0, on.astype(np.int8), 0]))
    depths = []
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        before = cover[a - 2] if a >= 2 else 0
        after = cover[b + 1] if b + 1 < len(cover) else 0
        if max(before, after) < 0.5 * length:
            depths.append(b - a)
    thin = sum(d < RULE_THIN * width for d in depths)
    under = sum(d < width for d in depths)
    return under if under >= 3 else thin


def framed(piece: np.ndarray, t: int = 3) -> bool:
    """A rectangle's outline (a printed box, a grid): ink along three of the four sides of its
    bounding box, 80 % of each at least (one may be cut off by the photo). A 4's stem and bar
    make a hollow piece as large, but touch its sides at points."""
    sides = (piece[:t].any(0), piece[-t:].any(0), piece[:, :t].any(1), piece[:, -t:].any(1))
    return sum(float(side.mean()) >= 0.8 for side in sides) >= 3


def select_digit(
    mask: np.ndarray, ink: np.ndarray, pieces: Pieces | None = None
) -> np.ndarray | None:
    """The digit's pixels among the mask's connected pieces, or None if there is none.

    The main piece is the one with the most ink that is not a paper edge (a piece running along
    the image border: a table or the page's shadow in a photo). Strokes near the group join it,
    one after another (a 5's flag, a pen lifted mid-stroke, a faint pencil line broken into
    dashes): pieces with at least ``JOIN_MASS`` of the main piece's ink, at most ``JOIN_GAP``
    of the group's size away. Dots do not join: a piece no longer than ``DOT`` stroke widths
    of the main piece is a speck of dust, whatever its ink (beside a thin pen's digit a speck
    can outweigh a stroke). ``pieces``: ``Pieces.of(mask, ink)`` when the caller has them.
    """
    if not mask.any():
        return None
    p = pieces if pieces is not None else Pieces.of(mask, ink)
    if len(p) == 1:
        return mask.astype(bool)
    candidates = np.nonzero(~p.edge_like() & (p.area >= 2))[0]
    if len(candidates) == 0:
        candidates = np.arange(len(p))
    if (~p.dots[candidates]).any():
        candidates = candidates[~p.dots[candidates]]
    main = int(candidates[np.argmax(p.mass[candidates])])
    bx0, by0, bx1, by1 = p.x0[main], p.y0[main], p.x1[main], p.y1[main]
    length = np.maximum(p.x1 - p.x0, p.y1 - p.y0)
    joinable = p.mass >= JOIN_MASS * p.mass[main]
    if joinable.sum() > 1:
        joinable &= length > DOT * stroke_width(p.labels[by0:by1, bx0:bx1] == main + 1)
    chosen = {main}
    todo = [int(k) for k in candidates if joinable[k] and k != main]
    changed = True
    while changed and todo:
        changed = False
        gap = JOIN_GAP * max(bx1 - bx0, by1 - by0)
        for k in list(todo):
            dx = max(bx0 - p.x1[k], p.x0[k] - bx1, 0)
            dy = max(by0 - p.y1[k], p.y0[k] - by1, 0)
            if max(dx, dy) <= gap:
                chosen.add(k)
                todo.remove(k)
                bx0, by0 = min(bx0, p.x0[k]), min(by0, p.y0[k])
                bx1, by1 = max(bx1, p.x1[k]), max(by1, p.y1[k])
                changed = True
    keep = np.zeros(len(p) + 1, bool)
    keep[np.array(sorted(chosen)) + 1] = True
    return keep[p.labels]


def stroke_width(digit: np.ndarray) -> float:
    """Mean stroke width in px: 2 x ink area / boundary length (a stroke has two sides)."""
    b = (digit > 0.5).astype(np.uint8)
    if not b.any():
        return 0.0
    inner = np.asarray(cv2.erode(np.pad(b, 1), CROSS), np.uint8)[1:-1, 1:-1]
    boundary = int(b.sum()) - int((b & inner).sum())
    return 2.0 * float(b.sum()) / boundary if boundary else 0.0
