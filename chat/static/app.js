// Demo client for POST /chat/streams + EventSource. Plain JS, no build step, no dependencies.
// State for people is in the text; state for tests is in data-* attributes on <main>.
// Multi-turn: the conversation id lives in localStorage, the server keeps the history, and a
// reload shows it again through GET /conversations/{id}.
(() => {
  "use strict";

  const main = document.getElementById("app");
  const form = document.getElementById("ask");
  const input = document.getElementById("message");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  const newChatButton = document.getElementById("new-chat");
  const transcript = document.getElementById("transcript");
  const statusLine = document.getElementById("status");
  const answer = document.getElementById("answer");
  const errorBox = document.getElementById("error");
  const errorMessage = document.getElementById("error-message");
  const errorCode = document.getElementById("error-code");

  let source = null; // the EventSource of the current stream
  let streamUrl = null; // its events_url, also the DELETE target
  let lastId = 0; // id of the last event rendered: the duplicate guard
  let reconnects = 0;
  let answerText = null; // one Text node, appended to: no re-parsing, no HTML injection
  let generation = 0; // bumps per submit so callbacks of an older stream do nothing
  let conversationId = null;

  const STORAGE_KEY = "chat.conversationId";
  const CONVERSATION_ID = /^[A-Za-z0-9_-]{1,128}$/;

  // 128 random bits as hex. crypto.getRandomValues works on plain http too (randomUUID does not).
  function newConversationId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function useConversation(id) {
    conversationId = id;
    main.dataset.conversationId = id;
    try {
      localStorage.setItem(STORAGE_KEY, id);
    } catch {
      // Storage refused (private mode, quota): the conversation lasts as long as the page.
    }
  }

  function storedConversationId() {
    try {
      const id = localStorage.getItem(STORAGE_KEY);
      return id !== null && CONVERSATION_ID.test(id) ? id : null;
    } catch {
      return null;
    }
  }

  function addTurn(role, text) {
    const item = document.createElement("li");
    item.className = `turn ${role === "user" ? "user" : "assistant"}`;
    const label = document.createElement("span");
    label.className = "role";
    label.textContent = role === "user" ? "You" : "Assistant";
    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text; // text, never HTML
    item.append(label, body);
    transcript.appendChild(item);
  }

  // The last answer joins the transcript when the next message is sent: the server saved it
  // (as far as it got), so the page shows what the model will see.
  function archiveAnswer() {
    if (answerText !== null && answerText.data !== "") addTurn("assistant", answerText.data);
  }

  function setState(state) {
    main.dataset.state = state;
    const busy = state === "starting" || state === "streaming";
    // aria-busy holds back screen-reader announcements until the answer is complete.
    answer.setAttribute("aria-busy", String(busy));
    sendButton.disabled = busy || state === "loading";
    newChatButton.disabled = busy || state === "loading";
    stopButton.disabled = state !== "streaming";
  }

  function setStatus(text) {
    // Writing the same text again would make screen readers repeat it on every delta.
    if (statusLine.textContent !== text) statusLine.textContent = text;
  }

  function showError(code, message) {
    errorMessage.textContent = message;
    errorCode.textContent = code;
    errorBox.hidden = false;
  }

  function closeSource() {
    if (source !== null) {
      source.close();
      source = null;
    }
  }

  function fail(code, message, status) {
    closeSource();
    showError(code, message);
    setStatus(status || "Failed.");
    setState("error");
  }

  function reset() {
    closeSource();
    generation += 1;
    streamUrl = null;
    lastId = 0;
    reconnects = 0;
    main.dataset.lastEventId = "0";
    main.dataset.reconnects = "0";
    answer.textContent = "";
    answerText = document.createTextNode("");
    answer.appendChild(answerText);
    errorBox.hidden = true;
    errorMessage.textContent = "";
    errorCode.textContent = "";
  }

  // Parses one server event; null when it is a replay of something already rendered or unreadable.
  function accept(event) {
    const id = Number.parseInt(event.lastEventId, 10);
    if (Number.isSafeInteger(id)) {
      // The server resumes after Last-Event-ID exactly once; this guards against any replay.
      if (id <= lastId) return null;
      lastId = id;
      main.dataset.lastEventId = String(id);
    }
    try {
      return JSON.parse(event.data);
    } catch {
      fail("bad_event", "The server sent an event this page cannot read.");
      return null;
    }
  }

  function onDelta(event) {
    const data = accept(event);
    if (data === null) return;
    if (typeof data.text === "string") answerText.appendData(data.text);
    setStatus("Streaming\u2026");
  }

  function onDone(event) {
    const data = accept(event);
    if (data === null) return;
    closeSource();
    const tokens = data.usage && data.usage.output_tokens;
    const suffix = Number.isInteger(tokens) ? ` (${tokens} tokens)` : "";
    const cut = data.finish_reason === "length" ? " The answer hit the length limit." : "";
    setStatus(`Done${suffix}.${cut}`);
    setState("done");
  }

  function onServerError(event) {
    const data = accept(event);
    if (data === null) return;
    const code = typeof data.code === "string" ? data.code : "error";
    let message = typeof data.message === "string" ? data.message : "The stream failed.";
    if (data.retryable === true) message += " You can try again.";
    fail(code, message, code === "cancelled" ? "Stopped." : "The answer is incomplete.");
  }

  function onConnectionError() {
    if (source === null) return;
    if (source.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself and resumes with Last-Event-ID.
      reconnects += 1;
      main.dataset.reconnects = String(reconnects);
      setStatus("Connection lost, reconnecting\u2026");
      return;
    }
    // CLOSED without a terminal event: the server refused to resume (expired, 204, 5xx).
    fail("connection_lost", "The connection was lost and the answer could not be resumed.");
  }

  function listen(url, run) {
    source = new EventSource(url);
    const mine = (handler) => (event) => {
      if (run === generation) handler(event);
    };
    source.addEventListener("open", mine(() => setStatus("Streaming\u2026")));
    source.addEventListener("delta", mine(onDelta));
    source.addEventListener("done", mine(onDone));
    // "error" is both the server's error event (a MessageEvent with data) and EventSource's
    // own connection-problem event (a plain Event).
    source.addEventListener(
      "error",
      mine((event) => {
        if (event instanceof MessageEvent && typeof event.data === "string") {
          onServerError(event);
        } else {
          onConnectionError();
        }
      }),
    );
  }

  async function readError(response) {
    try {
      const body = await response.json();
      if (body && body.error && typeof body.error.code === "string") return body.error;
    } catch {
      // Not the contract's JSON (a proxy's error page): fall through to the status.
    }
    return { code: `http_${response.status}`, message: `The server answered ${response.status}.` };
  }

  async function start(message) {
    archiveAnswer();
    reset();
    const run = generation;
    setState("starting");
    setStatus("Sending\u2026");
    let response;
    try {
      response = await fetch("chat/streams", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ message, conversation_id: conversationId }),
      });
    } catch {
      if (run === generation) fail("network_error", "Could not reach the server.");
      return;
    }
    if (run !== generation) return;
    if (response.status !== 201) {
      const error = await readError(response);
      if (run === generation) fail(error.code, error.message, "The message was not accepted.");
      return;
    }
    let created;
    try {
      created = await response.json();
    } catch {
      created = null;
    }
    if (run !== generation) return;
    if (!created || typeof created.events_url !== "string") {
      fail("bad_response", "The server's answer had no events_url.");
      return;
    }
    streamUrl = new URL(created.events_url, document.baseURI).href;
    addTurn("user", message);
    input.value = "";
    setState("streaming");
    setStatus("Waiting for the first words\u2026");
    listen(streamUrl, run);
  }

  async function stop() {
    if (streamUrl === null || main.dataset.state !== "streaming") return;
    stopButton.disabled = true;
    setStatus("Stopping\u2026");
    try {
      const response = await fetch(streamUrl, { method: "DELETE" });
      // On success the stream itself ends with an error event "cancelled", rendered as usual.
      if (!response.ok) {
        const error = await readError(response);
        fail(error.code, error.message, "Could not stop the stream.");
      }
    } catch {
      if (main.dataset.state === "streaming") {
        stopButton.disabled = false;
        setStatus("Could not reach the server to stop the stream.");
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const message = input.value;
    if (message.trim() === "") {
      setStatus("Type a message first.");
      input.focus();
      return;
    }
    if (sendButton.disabled) return;
    start(message);
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  // After a reload: the turns the server kept for this page's conversation.
  async function loadHistory() {
    setState("loading");
    setStatus("Loading the conversation\u2026");
    main.dataset.history = "loading";
    let response;
    try {
      response = await fetch(`conversations/${encodeURIComponent(conversationId)}`, {
        headers: { Accept: "application/json" },
      });
    } catch {
      response = null;
    }
    if (response !== null && response.status === 200) {
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null;
      }
      const turns = body && Array.isArray(body.turns) ? body.turns : [];
      for (const turn of turns) {
        if (turn && typeof turn.text === "string") addTurn(turn.role, turn.text);
      }
      main.dataset.history = "loaded";
      setStatus(turns.length ? "Conversation restored." : "Ready.");
    } else if (response !== null && response.status === 404) {
      main.dataset.history = "empty"; // new, expired or deleted: it starts with the next message
      setStatus("Ready.");
    } else {
      main.dataset.history = "failed";
      setStatus("Earlier messages could not be loaded.");
    }
    setState("idle");
  }

  function newChat() {
    if (sendButton.disabled) return;
    reset();
    transcript.textContent = "";
    useConversation(newConversationId());
    main.dataset.history = "empty";
    setStatus("New chat.");
    setState("idle");
    input.focus();
  }

  stopButton.addEventListener("click", stop);
  newChatButton.addEventListener("click", newChat);

  reset();
  const stored = storedConversationId();
  useConversation(stored || newConversationId());
  if (stored) {
    loadHistory();
  } else {
    main.dataset.history = "empty";
    setState("idle");
  }
})();
