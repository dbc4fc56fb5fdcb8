// A small markdown renderer for model output: fenced code blocks, headings, lists, quotes, rules,
// paragraphs, and inline code, bold, italic, strike-through and http(s) links.
// It builds DOM nodes and sets text with textContent only, never innerHTML: whatever the model
// writes (HTML, scripts) shows as text. An unclosed code fence (a reply still streaming) runs to
// the end of the text.
"use strict";

const Markdown = (() => {
  const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)\s*$/;
  const HEADING = /^(#{1,6})\s+(.*)$/;
  const BULLET = /^\s*[-*+]\s+(.*)$/;
  const NUMBERED = /^\s*(\d+)[.)]\s+(.*)$/;
  const QUOTE = /^\s*>\s?(.*)$/;
  const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
  // Inline spans, first match wins: code, bold, strike, italic, link.
  const INLINE = /(`+)([\s\S]+?)\1|\*\*([\s\S]+?)\*\*|__([\s\S]+?)__|~~([\s\S]+?)~~|\*([^*\s][^*]*?)\*|\b_([^_\s][^_]*?)_\b|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g;

  function el(tag, className) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    return node;
  }

  function inline(parent, text) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.append(text.slice(last, m.index));
      last = m.index + m[0].length;
      if (m[1]) {
        const code = el("code");
        code.textContent = m[2];
        parent.append(code);
      } else if (m[3] || m[4]) {
        inline(parent.appendChild(el("strong")), m[3] || m[4]);
      } else if (m[5]) {
        inline(parent.appendChild(el("del")), m[5]);
      } else if (m[6] || m[7]) {
        inline(parent.appendChild(el("em")), m[6] || m[7]);
      } else {
        const link = el("a");
        link.href = m[9];
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        inline(link, m[8]);
        parent.append(link);
      }
    }
    if (last < text.length) parent.append(text.slice(last));
  }

  function codeBlock(lang, lines) {
    const wrap = el("div", "code-block");
    const bar = el("div", "code-bar");
    const label = el("span");
    label.textContent = lang || "text";
    const copy = el("button", "copy");
    copy.type = "button";
    copy.textContent = "copy";
    const text = lines.join("\n");
    copy.addEventListener("click", () => {
      navigator.clipboard?.writeText(text).then(() => { copy.textContent = "copied"; });
    });
    bar.append(label, copy);
    const pre = el("pre");
    const code = el("code");
    code.textContent = text;
    pre.append(code);
    wrap.append(bar, pre);
    return wrap;
  }

  function list(lines, i, pattern, tag) {
    const node = el(tag);
    while (i < lines.length) {
      const m = lines[i].match(pattern);
      if (!m) break;
      if (tag === "ol" && !node.children.length && m[1] !== "1") node.start = Number(m[1]);
      inline(node.appendChild(el("li")), m[m.length - 1]);
      i++;
    }
    return [node, i];
  }

  function render(text) {
    const root = document.createDocumentFragment();
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    let paragraph = [];
    const flush = () => {
      if (!paragraph.length) return;
      const p = el("p");
      paragraph.forEach((line, k) => {
        if (k) p.append(el("br"));
        inline(p, line);
      });
      root.append(p);
      paragraph = [];
    };
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if ((m = line.match(FENCE))) {
        flush();
        const body = [];
        i++;
        const closes = (l) => l.trim().startsWith(m[1]) && /^[`~]+$/.test(l.trim());
        while (i < lines.length && !closes(lines[i])) body.push(lines[i++]);
        i++;  // the closing fence
        root.append(codeBlock(m[2], body));
      } else if ((m = line.match(HEADING))) {
        flush();
        inline(root.appendChild(el(`h${m[1].length}`)), m[2]);
        i++;
      } else if (RULE.test(line)) {
        flush();
        root.append(el("hr"));
        i++;
      } else if (BULLET.test(line) || NUMBERED.test(line)) {
        flush();
        const [node, next] = BULLET.test(line) ? list(lines, i, BULLET, "ul") : list(lines, i, NUMBERED, "ol");
        root.append(node);
        i = next;
      } else if (QUOTE.test(line)) {
        flush();
        const quoted = [];
        while (i < lines.length && (m = lines[i].match(QUOTE))) {
          quoted.push(m[1]);
          i++;
        }
        const quote = el("blockquote");
        quote.append(render(quoted.join("\n")));
        root.append(quote);
      } else if (!line.trim()) {
        flush();
        i++;
      } else {
        paragraph.push(line);
        i++;
      }
    }
    flush();
    return root;
  }

  return { render };
})();
