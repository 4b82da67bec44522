// vislingo gallery: renders window.VISLINGO_META (data/meta.js) and the records of data/chunk-NNNN.js page by page.
// Chunks are loaded with <script> elements (fetch is refused for file: URLs) when a page or a search needs them.
// Everything from the records is put in the DOM as text (never as HTML). Progress is reported on <html> as
// data-state ("loading", "ready"), data-busy ("1" while a page renders), data-query and data-search ("none",
// "partial" while chunks load, "complete"), data-matches, data-page, data-pages and data-shown (cards shown).
(function () {
  "use strict";

  const meta = window.VISLINGO_META;
  const root = document.documentElement;
  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat("en");
  const fmt = (n) => numberFormat.format(n);
  const seconds = (s) => (s >= 100 ? fmt(Math.round(s)) : s.toFixed(s >= 10 ? 1 : 2)) + " s";
  const bytes = (b) => {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i += 1; }
    return (i === 0 ? b : b.toFixed(b >= 100 ? 0 : 1)) + " " + units[i];
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  if (!meta) {
    $("status").textContent = "data/meta.js is missing: this folder is not a complete vislingo gallery.";
    root.dataset.state = "error";
    return;
  }

  const langs = new Map(meta.langs.map((l) => [l.code, l]));
  const taskLabels = new Map(meta.tasks.map((t) => [t.name, t.label]));
  const chunks = new Array(meta.chunks).fill(null);
  const loading = new Map();
  // Lower-cased searchable text and tags per record, filled as chunks arrive.
  const searchText = new Array(meta.count).fill(null);
  const searchTags = new Array(meta.count).fill(null);
  const indexTags = meta.index.map((entry) => entry[3].map((t) => t.toLowerCase()));
  const indexKeys = meta.index.map((entry) => entry[0].toLowerCase());
  let chunksLoaded = 0;

  const state = { page: 0, query: "", errorsOnly: false, kind: "", matches: null };

  // Called by each data/chunk-NNNN.js.
  window.vislingoChunk = function (number, items) {
    if (chunks[number]) return;
    chunks[number] = items;
    chunksLoaded += 1;
    const base = number * meta.chunk_size;
    items.forEach((item, offset) => {
      const record = item.record;
      const parts = [record.asset];
      const tags = [];
      for (const output of record.outputs || []) {
        parts.push(output.text);
        for (const tag of output.tags || []) tags.push(tag.toLowerCase());
        for (const tr of output.translations || []) {
          parts.push(tr.text);
          for (const tag of tr.tags || []) tags.push(tag.toLowerCase());
        }
      }
      if (record.error) parts.push(record.error.stage, record.error.message);
      searchText[base + offset] = parts.join("\n").toLowerCase();
      searchTags[base + offset] = tags;
    });
  };

  function loadChunk(number) {
    if (chunks[number]) return Promise.resolve();
    if (loading.has(number)) return loading.get(number);
    const promise = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "data/chunk-" + String(number).padStart(4, "0") + ".js";
      script.onload = () => (chunks[number] ? resolve() : reject(new Error(script.src + " held no records")));
      script.onerror = () => reject(new Error("cannot load " + script.src));
      document.head.append(script);
    });
    loading.set(number, promise);
    promise.catch(() => loading.delete(number));
    return promise;
  }

  function item(index) {
    const chunk = chunks[Math.floor(index / meta.chunk_size)];
    return chunk ? chunk[index % meta.chunk_size] : null;
  }

  // --- search -------------------------------------------------------------------------------------------------

  // Words and "quoted phrases", lower case; `tag:` restricts a term to tags.
  function parseQuery(query) {
    const terms = [];
    const pattern = /(tag:)?(?:"([^"]*)"|(\S+))/gi;
    let match;
    while ((match = pattern.exec(query)) !== null) {
      const text = (match[2] !== undefined ? match[2] : match[3]).toLowerCase().trim();
      if (text) terms.push({ text, tagOnly: Boolean(match[1]) });
    }
    return terms;
  }

  function matchesTerm(index, term) {
    const tags = searchTags[index] || indexTags[index];
    if (tags.some((tag) => tag.includes(term.text))) return true;
    if (term.tagOnly) return false;
    if (indexKeys[index].includes(term.text)) return true;
    return searchText[index] !== null && searchText[index].includes(term.text);
  }

  function computeMatches() {
    const terms = parseQuery(state.query);
    if (!terms.length && !state.errorsOnly && !state.kind) return null;
    const result = [];
    for (let i = 0; i < meta.count; i += 1) {
      const entry = meta.index[i];
      if (state.errorsOnly && !entry[2]) continue;
      if (state.kind && entry[1] !== state.kind) continue;
      if (terms.every((term) => matchesTerm(i, term))) result.push(i);
    }
    return result;
  }

  // Loads every chunk (once) so that text search covers every record; re-runs the search as they arrive.
  let loadingAll = null;
  function loadAllForSearch() {
    if (loadingAll) return loadingAll;
    // Deferred, so that loadingAll is set before the loop's refilter() calls come back here.
    loadingAll = Promise.resolve().then(async () => {
      for (let n = 0; n < meta.chunks; n += 1) {
        if (!chunks[n]) {
          await loadChunk(n);
          if (n % 5 === 4) {
            refilter(false);
            await new Promise((resolve) => setTimeout(resolve, 0));
          }
        }
      }
      refilter(false);
    });
    return loadingAll;
  }

  // --- rendering ----------------------------------------------------------------------------------------------

  function statItem(value, label, cls) {
    return el("div", { class: "stat" + (cls ? " " + cls : "") }, el("b", { text: value }), el("span", { text: label }));
  }

  function renderStats() {
    const s = meta.stats;
    const box = $("stats");
    box.replaceChildren(
      statItem(fmt(s.records), "records"),
      statItem(fmt(s.images), "images"),
      statItem(fmt(s.videos), "videos"),
      statItem(fmt(s.succeeded), "succeeded"),
      statItem(fmt(s.failed), "failed", s.failed ? "bad" : ""),
      s.missing !== null && s.missing !== undefined ? statItem(fmt(s.missing), "missing", s.missing ? "bad" : "") : null,
      statItem(seconds(s.average_s_per_record), "per asset"),
      statItem(fmt(Math.round(s.tokens_per_s * 10) / 10), "tokens/s"),
      statItem(fmt(s.generated_tokens), "tokens"),
      statItem(fmt(s.translations), "translations"),
    );
    const stages = Object.entries(s.failed_by_stage).map(([stage, n]) => stage + " " + fmt(n)).join(", ");
    const details = [
      "Worker time " + seconds(s.total_s) + " (decode " + seconds(s.decode_s) + ", vision " + seconds(s.vision_s) +
        ", generation " + seconds(s.generation_s) + ", translation " + seconds(s.translation_s) + ")",
      bytes(s.media_bytes) + " of media" + (s.video_seconds ? ", " + seconds(s.video_seconds) + " of video" : ""),
      s.cut_by_token_limit ? fmt(s.cut_by_token_limit) + " texts cut by the token limit" : null,
      stages ? "Failures by stage: " + stages : null,
      "Models: " + (s.models.join(", ") || "none") + (s.translators.length ? "; translator: " + s.translators.join(", ") : ""),
      "Tasks: " + (meta.tasks.map((t) => t.label).join(", ") || "none") +
        "; languages: " + (meta.langs.map((l) => l.name).join(", ") || "none"),
    ].filter(Boolean);
    // Open on wide screens; a phone shows the cards first.
    const more = el("details", { class: "more", open: window.matchMedia("(min-width: 721px)").matches },
      el("summary", { text: "Details and frequent tags" }),
      el("p", { class: "stats-detail" }, details.join(" · ")));
    if (s.top_tags.length) {
      const list = el("ul", { class: "chips top-tags", "aria-label": "Most frequent tags" });
      for (const [tag, n] of s.top_tags.slice(0, 16)) {
        list.append(el("li", {}, el("button", { class: "chip", type: "button", onclick: () => searchTag(tag) }, tag, el("span", { class: "n", text: fmt(n) }))));
      }
      more.append(list);
    }
    box.append(more);
  }

  function searchTag(tag) {
    const input = $("search");
    input.value = "tag:" + (/\s/.test(tag) ? '"' + tag + '"' : tag);
    state.query = input.value;
    state.page = 0;
    refilter(true);
  }

  function renderPreview(record, preview) {
    const media = el("div", { class: "media" });
    if (preview.kind === "image" || preview.kind === "frames") {
      media.append(el("img", {
        src: preview.src, width: preview.width, height: preview.height, loading: "lazy", decoding: "async",
        alt: (preview.kind === "frames" ? "Sampled frames of " : "Thumbnail of ") + record.asset,
      }));
      if (preview.kind === "frames") {
        media.append(el("p", { class: "frames", text: "Frames " + preview.frames.join(" · ") }));
      }
    } else {
      media.append(el("div", { class: "placeholder" },
        el("b", { text: record.kind === "video" ? "Video" : "Image" }),
        el("span", { text: "No preview: " + preview.reason })));
    }
    const info = record.media;
    if (info) {
      const rows = [["Size", bytes(info.bytes)], ["Pixels", info.width + "×" + info.height]];
      if (info.tiles) rows.push([record.kind === "video" ? "Frames used" : "Tiles", String(info.tiles)]);
      const v = info.video;
      if (v) {
        rows.push(["Duration", seconds(v.duration_s)], ["Frame rate", v.fps ? v.fps.toFixed(2) + " fps" : "unknown"],
          ["Frames", fmt(v.frame_count) + " (" + v.frame_count_source.replace(/_/g, " ") + ")"],
          ["Codec", v.codec], ["Rotation", v.rotation + "°" + (v.rotation && !v.rotation_applied ? " (not applied)" : "")]);
        if (!preview.frames) rows.push(["Frames seen", v.frame_indices.join(", ")]);
      }
      const list = el("dl");
      for (const [name, value] of rows) list.append(el("dt", { text: name }), el("dd", { text: value }));
      media.append(list);
    }
    return media;
  }

  function toneOf(text) {
    const first = text.split(/(?<=[.!?])\s/)[0].toLowerCase();
    const found = /\b(positive|negative|neutral|mixed)\b/.exec(first);
    return found ? found[1] : null;
  }

  function renderTask(output) {
    const label = taskLabels.get(output.task) || output.task;
    const heading = el("h3", {}, label);
    if (output.task === "sentiment") {
      const tone = toneOf(output.text);
      if (tone) heading.append(el("span", { class: "badge " + tone, title: "First tone word of the analysis", text: tone }));
    }
    if (!output.finished) heading.append(el("span", { class: "badge warn", title: "The token limit cut this text", text: "cut at " + fmt(output.generated_tokens) + " tokens" }));
    const section = el("section", { class: "task task-" + output.task }, heading);
    if (output.tags) {
      const chips = el("ul", { class: "chips", lang: "en" });
      for (const tag of output.tags) {
        chips.append(el("li", {}, el("button", { class: "chip", type: "button", onclick: () => searchTag(tag) }, tag)));
      }
      section.append(chips);
    } else {
      section.append(el("p", { class: "text", lang: "en", text: output.text }));
    }
    if (output.translations && output.translations.length) {
      const grid = el("div", { class: "translations" });
      for (const tr of output.translations) {
        const lang = langs.get(tr.lang) || { code: tr.lang, name: tr.lang, tag: tr.lang, dir: "auto" };
        const block = el("div", { class: "tr", lang: lang.tag, dir: lang.dir, "data-lang": lang.code },
          el("h4", { lang: "en", dir: "ltr" }, lang.name + " ", el("code", { text: lang.code })));
        if (tr.tags) {
          const chips = el("ul", { class: "chips" });
          for (const tag of tr.tags) chips.append(el("li", {}, el("span", { class: "chip", text: tag })));
          block.append(chips);
        } else {
          block.append(el("p", { class: "text", text: tr.text }));
        }
        grid.append(block);
      }
      section.append(grid);
    }
    return section;
  }

  function renderCard(index) {
    const { record, preview } = item(index);
    const failed = Boolean(record.error);
    const card = el("article", { class: "card" + (failed ? " failed" : ""), "data-index": index, "data-asset": record.asset });
    const head = el("div", { class: "card-head" },
      el("h2", { text: record.asset }),
      el("span", { class: "badge " + record.kind, text: record.kind }),
      failed ? el("span", { class: "badge failed", text: "failed" }) : null);
    const body = el("div", { class: "body" }, head, el("div", { class: "model", text: record.model }));
    if (failed) {
      body.append(el("div", { class: "error", role: "alert" }, el("b", { text: record.error.stage }), record.error.message));
    }
    for (const output of record.outputs || []) body.append(renderTask(output));
    const t = record.timings;
    const tokens = (record.outputs || []).reduce((sum, o) => sum + o.generated_tokens, 0);
    const gen = (record.outputs || []).reduce((sum, o) => sum + o.generation_s, 0);
    const parts = [
      "Total " + seconds(t.total_s),
      "decode " + seconds(t.decode_s), "vision " + seconds(t.vision_s),
      "generation " + seconds(t.generation_s), "translation " + seconds(t.translation_s),
      fmt(tokens) + " tokens" + (gen > 0 ? " (" + (tokens / gen).toFixed(1) + " tokens/s)" : ""),
    ];
    body.append(el("div", { class: "asset-stats", text: parts.join(" · ") }));
    card.append(renderPreview(record, preview), body);
    return card;
  }

  function pageButton(label, page, attrs) {
    return el("button", Object.assign({ type: "button", onclick: () => goTo(page) }, attrs), label);
  }

  function renderPager(nav, total, pages) {
    nav.replaceChildren();
    if (pages > 1) {
      nav.append(pageButton("‹ Previous", state.page - 1, { disabled: state.page === 0, "aria-label": "Previous page" }));
      const shown = new Set([0, pages - 1]);
      for (let p = state.page - 2; p <= state.page + 2; p += 1) if (p >= 0 && p < pages) shown.add(p);
      let last = -1;
      for (const p of [...shown].sort((a, b) => a - b)) {
        if (p > last + 1) nav.append(el("span", { class: "gap", text: "…" }));
        nav.append(pageButton(String(p + 1), p, { "aria-current": p === state.page ? "page" : null }));
        last = p;
      }
      nav.append(pageButton("Next ›", state.page + 1, { disabled: state.page >= pages - 1, "aria-label": "Next page" }));
    }
    const first = total ? state.page * meta.page_size + 1 : 0;
    const end = Math.min(total, (state.page + 1) * meta.page_size);
    nav.append(el("span", { class: "count", text: fmt(first) + "–" + fmt(end) + " of " + fmt(total) }));
  }

  let renderToken = 0;
  let rendering = 0;
  async function render() {
    rendering += 1;
    root.dataset.busy = "1";
    try {
      await renderPage();
    } finally {
      rendering -= 1;
      if (!rendering) root.dataset.busy = "0";
    }
  }

  async function renderPage() {
    const token = ++renderToken;
    const ids = state.matches || null;
    const total = ids ? ids.length : meta.count;
    const pages = Math.max(1, Math.ceil(total / meta.page_size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    const start = state.page * meta.page_size;
    const wanted = [];
    for (let k = start; k < Math.min(total, start + meta.page_size); k += 1) wanted.push(ids ? ids[k] : k);
    const needed = [...new Set(wanted.map((i) => Math.floor(i / meta.chunk_size)))];
    try {
      await Promise.all(needed.map(loadChunk));
    } catch (error) {
      $("status").textContent = String(error.message || error);
      root.dataset.state = "error";
      return;
    }
    if (token !== renderToken) return;
    const fragment = document.createDocumentFragment();
    for (const index of wanted) fragment.append(renderCard(index));
    if (!wanted.length) fragment.append(el("p", { class: "empty", text: "No asset matches." }));
    $("cards").replaceChildren(fragment);
    renderPager($("pager-top"), total, pages);
    renderPager($("pager-bottom"), total, pages);
    root.dataset.shown = String(wanted.length);
    root.dataset.page = String(state.page + 1);
    root.dataset.pages = String(pages);
    updateStatus(total);
    writeHash();
    if (root.dataset.state !== "ready") {
      root.dataset.state = "ready";
      window.vislingoFirstPageMs = performance.now();
      // After the frame that shows it has been painted.
      requestAnimationFrame(() => setTimeout(() => { window.vislingoFirstPaintMs = performance.now(); }, 0));
    }
  }

  function updateStatus(total) {
    const filtered = state.matches !== null;
    const complete = chunksLoaded === meta.chunks;
    root.dataset.search = filtered ? (complete ? "complete" : "partial") : "none";
    root.dataset.query = state.query;
    root.dataset.matches = String(total);
    let text = filtered ? fmt(total) + " of " + fmt(meta.count) + " assets match" : fmt(meta.count) + " assets";
    if (filtered && !complete && parseQuery(state.query).length) {
      text += " (searching: texts of " + fmt(searchText.filter((t) => t !== null).length) + " loaded so far)";
    }
    $("status").textContent = text;
  }

  function refilter(resetPage) {
    const before = state.matches ? state.matches.length : -1;
    state.matches = computeMatches();
    if (resetPage) state.page = 0;
    const after = state.matches ? state.matches.length : -1;
    if (resetPage || before !== after) render();
    else updateStatus(state.matches ? state.matches.length : meta.count);
    if (state.matches !== null && parseQuery(state.query).length) loadAllForSearch();
  }

  function goTo(page) {
    state.page = page;
    render().then(() => $("cards").scrollIntoView({ block: "start" }));
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.page) params.set("page", String(state.page + 1));
    if (state.query) params.set("q", state.query);
    if (state.errorsOnly) params.set("failed", "1");
    if (state.kind) params.set("kind", state.kind);
    const hash = params.toString();
    if (hash !== location.hash.slice(1)) history.replaceState(null, "", hash ? "#" + hash : location.pathname);
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    state.page = Math.max(0, (parseInt(params.get("page") || "1", 10) || 1) - 1);
    state.query = params.get("q") || "";
    state.errorsOnly = params.get("failed") === "1";
    state.kind = params.get("kind") || "";
    $("search").value = state.query;
    $("errors-only").checked = state.errorsOnly;
    $("kind").value = state.kind;
  }

  // --- start --------------------------------------------------------------------------------------------------

  document.title = meta.title + " · vislingo";
  $("title").textContent = meta.title;
  $("source").textContent = meta.source + " · written " + new Date(meta.generated_at * 1000).toLocaleString("en");
  renderStats();
  readHash();
  let debounce = null;
  $("search").addEventListener("input", (event) => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      state.query = event.target.value;
      refilter(true);
    }, 120);
  });
  $("errors-only").addEventListener("change", (event) => { state.errorsOnly = event.target.checked; refilter(true); });
  $("kind").addEventListener("change", (event) => { state.kind = event.target.value; refilter(true); });
  $("show-translations").addEventListener("change", (event) => {
    document.body.classList.toggle("hide-translations", !event.target.checked);
  });
  root.dataset.state = "loading";
  const keepPage = state.page;
  state.matches = computeMatches();
  state.page = keepPage;
  render();
  if (state.matches !== null && parseQuery(state.query).length) loadAllForSearch();
})();
