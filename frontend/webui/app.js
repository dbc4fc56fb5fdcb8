// The chat page: conversations kept in localStorage, replies streamed from /v1/chat/completions
// (server-sent events read from fetch, so Stop can abort them), markdown rendering, a system
// prompt and sampling settings, and tokens per second of each reply (the response's `timings`
// when the server sends them, else counted from the stream). In router mode (the model list
// carries each model's `status`) a picker lists the models with their status and the chosen one
// goes in the requests' `model`; a model that is not loaded loads on the first message.
"use strict";

const STORE = {
  conversations: "ggserve.conversations",
  current: "ggserve.current",
  settings: "ggserve.settings",
  key: "ggserve.apiKey",
  model: "ggserve.model",
};
const SAMPLING = ["temperature", "top_p", "top_k", "min_p", "max_tokens"];

const $ = (id) => document.getElementById(id);
let conversations = load(STORE.conversations, []);
let currentId = localStorage.getItem(STORE.current) || null;
let settings = load(STORE.settings, { systemPrompt: "" });
let modelName = "";
let controller = null;  // the AbortController of the reply being streamed
let attachments = [];  // data: URLs of the images picked for the next message

function load(key, fallback) {
  try {
    return JSON.parse(localStorage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

function save() {
  try {
    localStorage.setItem(STORE.conversations, JSON.stringify(conversations));
  } catch (err) {  // the browser's quota (a few MB): attached images fill it fast
    console.warn("conversations not saved:", err);
  }
  localStorage.setItem(STORE.current, currentId ?? "");
}

// ---------------------------------------------------------------- API

// The server's routes are under --api-prefix, as this script is: /PREFIX/webui/app.js.
const PREFIX = new URL(document.currentScript.src).pathname.replace(/\/webui\/app\.js$/, "");

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = localStorage.getItem(STORE.key);
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

// fetch with the API key; a 401 asks for a key and tries again (until the user gives none).
async function api(path, options = {}) {
  for (;;) {
    const response = await fetch(PREFIX + path, { ...options, headers: headers() });
    if (response.status !== 401 || !(await askKey())) return response;
  }
}

function askKey() {
  return new Promise((resolve) => {
    const dialog = $("api-key-dialog");
    $("api-key").value = "";
    dialog.onclose = () => {
      const key = $("api-key").value.trim();
      if (key) localStorage.setItem(STORE.key, key);
      resolve(Boolean(key));
    };
    dialog.showModal();
  });
}

async function errorText(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function loadModel() {
  const response = await api("/v1/models");
  if (!response.ok) {
    $("model-name").textContent = "(no model: " + (await errorText(response)) + ")";
    return;
  }
  const models = (await response.json()).data;
  // a server with an image projector (--mmproj) takes pictures in user messages
  $("attach-button").hidden = !models[0].architecture?.input_modalities?.includes("image");
  if (!models.some((m) => m.status)) {  // one model: its name, no picker
    modelName = models[0].id;
    $("model-name").textContent = modelName;
    return;
  }
  const saved = localStorage.getItem(STORE.model);
  if (!models.some((m) => m.id === modelName)) {
    modelName = models.some((m) => m.id === saved) ? saved : models[0].id;
  }
  const picker = $("model-picker");
  picker.replaceChildren(...models.map((m) => {
    const option = document.createElement("option");
    option.value = m.id;
    option.dataset.status = m.status.value;
    option.textContent = `${m.id} (${m.status.failed ? "failed to load" : m.status.value})`;
    if (m.status.message) option.title = m.status.message;
    return option;
  }));
  picker.value = modelName;
  picker.hidden = false;
  $("model-name").hidden = true;
}

// ---------------------------------------------------------------- conversations

function current() {
  return conversations.find((c) => c.id === currentId) || null;
}

function newConversation() {
  const convo = { id: crypto.randomUUID?.() ?? String(Date.now()), title: "New chat", messages: [] };
  conversations.unshift(convo);
  currentId = convo.id;
  save();
  return convo;
}

function renderSidebar() {
  const list = $("conversations");
  list.replaceChildren();
  for (const convo of conversations) {
    const item = document.createElement("li");
    item.className = convo.id === currentId ? "active" : "";
    const title = document.createElement("span");
    title.textContent = convo.title;
    title.addEventListener("click", () => {
      if (controller) return;
      currentId = convo.id;
      save();
      render();
    });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete";
    remove.title = "Delete this conversation";
    remove.textContent = "×";
    remove.addEventListener("click", () => {
      if (controller && convo.id === currentId) return;
      conversations = conversations.filter((c) => c !== convo);
      if (currentId === convo.id) currentId = conversations[0]?.id ?? null;
      save();
      render();
    });
    item.append(title, remove);
    list.append(item);
  }
}

function messageView(message) {
  const node = document.createElement("div");
  node.className = `message ${message.role}`;
  const role = document.createElement("div");
  role.className = "role";
  role.textContent = message.role === "user" ? "You" : message.model || modelName || "Assistant";
  const reasoning = document.createElement("details");
  reasoning.className = "reasoning";
  const summary = document.createElement("summary");
  summary.textContent = "Reasoning";
  const reasoningText = document.createElement("div");
  reasoning.append(summary, reasoningText);
  const content = document.createElement("div");
  content.className = "content";
  const meta = document.createElement("div");
  meta.className = "meta";
  node.append(role, reasoning, content, meta);
  const update = () => {
    reasoning.hidden = !message.reasoning;
    reasoningText.textContent = message.reasoning || "";
    if (message.role === "assistant") content.replaceChildren(Markdown.render(message.content));
    else content.replaceChildren(...userContent(message.content));
    const notes = [];
    if (message.stats) notes.push(message.stats);
    if (message.stopped) notes.push("stopped");
    if (message.error) notes.push(`error: ${message.error}`);
    meta.textContent = notes.join(" · ");
    meta.classList.toggle("error", Boolean(message.error));
  };
  update();
  return { node, update };
}

// A user message is its text, or OpenAI content parts: text and images (data: URLs).
function userContent(parts) {
  if (typeof parts === "string") return [parts];
  return parts.map((part) => {
    if (part.type === "text") return part.text;
    const img = document.createElement("img");
    img.className = "attachment";
    img.src = part.image_url.url;
    img.alt = "attached image";
    return img;
  });
}

function render() {
  renderSidebar();
  const box = $("messages");
  box.replaceChildren();
  const convo = current();
  if (!convo || !convo.messages.length) {
    const empty = document.createElement("div");
    empty.className = "empty";
    empty.textContent = "Start a conversation below.";
    box.append(empty);
    return;
  }
  for (const message of convo.messages) box.append(messageView(message).node);
  box.scrollTop = box.scrollHeight;
}

// ---------------------------------------------------------------- sending and streaming

function requestBody(convo) {
  const messages = convo.messages.slice(0, -1).filter((m) => !m.error).map((m) => ({ role: m.role, content: m.content }));
  if (settings.systemPrompt.trim()) messages.unshift({ role: "system", content: settings.systemPrompt });
  const body = { model: modelName, messages, stream: true, stream_options: { include_usage: true } };
  for (const name of SAMPLING) {
    if (settings[name] !== undefined && settings[name] !== "") body[name] = Number(settings[name]);
  }
  return body;
}

// "N tokens, X tokens/s": from the server's timings when present, else counted from the stream.
function speed(timings, usage, counted, firstAt, lastAt) {
  if (timings && timings.predicted_per_second) {
    return `${timings.predicted_n} tokens · ${timings.predicted_per_second.toFixed(1)} tokens/s`;
  }
  const tokens = usage?.completion_tokens ?? counted;
  const seconds = (lastAt - firstAt) / 1000;
  const rate = tokens > 1 && seconds > 0 ? ` · ${((tokens - 1) / seconds).toFixed(1)} tokens/s` : "";
  return `${tokens} tokens${rate}`;
}

async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        // ": ping" comments keep the connection alive; "[DONE]" ends the stream
        if (line.startsWith("data: ") && line !== "data: [DONE]") yield JSON.parse(line.slice(6));
      }
    }
  }
}

async function send(text) {
  const convo = current() || newConversation();
  if (!convo.messages.length) convo.title = text.slice(0, 48);
  const images = attachments.map((url) => ({ type: "image_url", image_url: { url } }));
  attachments = [];
  $("attached").textContent = "";
  convo.messages.push({ role: "user", content: images.length ? [{ type: "text", text }, ...images] : text });
  const reply = { role: "assistant", content: "", model: modelName };
  convo.messages.push(reply);
  save();
  render();
  const view = messageView(reply);
  $("messages").lastChild.replaceWith(view.node);
  let frame = 0;
  const redraw = () => {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      view.update();
      $("messages").scrollTop = $("messages").scrollHeight;
    });
  };
  controller = new AbortController();
  setBusy(true);
  const picked = $("model-picker").selectedOptions[0];
  if (!$("model-picker").hidden && picked && picked.dataset.status !== "loaded") {
    $("status").textContent = `loading ${modelName}…`;  // the server loads it before the first token
  }
  let counted = 0, firstAt = 0, lastAt = 0, usage = null, timings = null;
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST", body: JSON.stringify(requestBody(convo)), signal: controller.signal,
    });
    if (!response.ok) throw new Error(await errorText(response));
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices?.[0]?.delta;
      if (delta?.content || delta?.reasoning_content) {
        lastAt = performance.now();
        if (!firstAt) $("status").textContent = "generating…";  // past a model load
        firstAt ||= lastAt;
        counted++;
        reply.content += delta.content || "";
        if (delta.reasoning_content) reply.reasoning = (reply.reasoning || "") + delta.reasoning_content;
        redraw();
      }
      usage = chunk.usage || usage;
      timings = chunk.timings || timings;
    }
  } catch (err) {
    if (err.name === "AbortError") reply.stopped = true;
    else reply.error = err.message;
  }
  if (counted || usage) reply.stats = speed(timings, usage, counted, firstAt, lastAt);
  controller = null;
  setBusy(false);
  if (!$("model-picker").hidden) loadModel();  // the model's status changed (loaded)
  save();
  cancelAnimationFrame(frame);
  view.update();
  renderSidebar();
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("model-picker").disabled = busy;
  $("status").textContent = busy ? "generating…" : "";
  document.body.classList.toggle("busy", busy);
}

// ---------------------------------------------------------------- settings

function openSettings() {
  $("system-prompt").value = settings.systemPrompt;
  for (const name of SAMPLING) $(name).value = settings[name] ?? "";
  $("settings").showModal();
}

function closeSettings() {
  settings.systemPrompt = $("system-prompt").value;
  for (const name of SAMPLING) settings[name] = $(name).value;
  localStorage.setItem(STORE.settings, JSON.stringify(settings));
}

// The server's defaults (--ui-config, /props' ui_settings) for the settings this browser has
// not set: llama-server's names (systemMessage) or this page's (systemPrompt, temperature, ...).
async function loadServerSettings() {
  const response = await api("/props");
  if (!response.ok) return;
  const defaults = (await response.json()).ui_settings || {};
  const system = defaults.systemPrompt ?? defaults.systemMessage;
  if (!settings.systemPrompt && typeof system === "string") settings.systemPrompt = system;
  for (const name of SAMPLING) {
    if ((settings[name] ?? "") === "" && defaults[name] !== undefined) settings[name] = String(defaults[name]);
  }
}

// ---------------------------------------------------------------- wiring

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller?.abort());
$("attach-button").addEventListener("click", () => $("attach").click());
$("attach").addEventListener("change", async () => {
  const read = (file) => new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
  attachments.push(...(await Promise.all([...$("attach").files].map(read))));
  $("attach").value = "";
  $("attached").textContent = `${attachments.length} image${attachments.length === 1 ? "" : "s"}`;
});
$("new-chat").addEventListener("click", () => {
  if (controller) return;
  newConversation();
  render();
  $("prompt").focus();
});
$("open-settings").addEventListener("click", openSettings);
$("settings").addEventListener("close", closeSettings);
$("forget-key").addEventListener("click", () => localStorage.removeItem(STORE.key));
$("model-picker").addEventListener("change", (event) => {
  modelName = event.target.value;
  localStorage.setItem(STORE.model, modelName);
});
// Statuses change on the server (loads, unloads, sleep): refresh them while the page is shown,
// but never under the user's hand (rebuilding an open list would close it).
setInterval(() => {
  if (!$("model-picker").hidden && !document.hidden && document.activeElement !== $("model-picker")) loadModel();
}, 5000);

render();
loadModel().then(loadServerSettings);  // one after the other: a 401 asks for the key once
