// The rating page: one item at a time, voted from the keyboard. The next items are prefetched
// (data and images) so the next one appears at once; each vote is sent the moment it is cast, with
// a request id that makes a retried send harmless. Votes go out in order (an undo never overtakes
// the vote it undoes); a network error or a server error (5xx) is retried with backoff while the
// page shows how many votes are waiting; a refusal (4xx) is shown and skipped, never retried.
(function () {
  "use strict";
  const root = document.getElementById("rater");
  const urls = {next: root.dataset.nextUrl, vote: root.dataset.voteUrl, undo: root.dataset.undoUrl,
                skip: root.dataset.skipUrl};
  const help = document.getElementById("keys");
  const prefetch = parseInt(root.dataset.prefetch, 10);
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  const image = document.getElementById("current-image");
  const caption = document.getElementById("current-caption");
  const figure = document.getElementById("current");
  const empty = document.getElementById("empty");
  const status = document.getElementById("status");
  let queue = [];          // items waiting to be shown; queue[0] is on screen
  let fetching = null;
  let outbox = Promise.resolve();  // votes and undos go out in order
  let waiting = 0;                 // sends not yet acknowledged
  let exhausted = false;
  const SERVER_ERROR_ATTEMPTS = 6;  // a vote the server keeps failing on is given up after ~30 s

  const key = (item) => item.token;
  const newId = () => (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).replace(/-/g, "");

  const left = document.getElementById("left");
  // "Left in this generation": the server's count at a fetch, plus the votes and undos made here
  // since that fetch was sent. Fetches and votes go out through one ordered chain, so the server's
  // count includes exactly the changes made before the fetch.
  let leftAtFetch = {};   // generation id -> count from the last fetch
  let localChanges = {};  // generation id -> running total of local changes (-1 a vote, +1 an undo)
  let changesAtFetch = {};
  function showLeft() {
    const item = queue[0];
    if (!item || leftAtFetch[item.generation_id] === undefined) { left.textContent = "0"; return; }
    const g = item.generation_id;
    left.textContent = Math.max(0, leftAtFetch[g] + (localChanges[g] || 0) - (changesAtFetch[g] || 0));
  }
  function setCounters(c, changesWhenSent) {
    if (!c) return;
    document.getElementById("rated-today").textContent = c.rated_today;
    if (c.left_by_generation !== undefined && changesWhenSent !== undefined) {
      leftAtFetch = c.left_by_generation;
      changesAtFetch = changesWhenSent;
      showLeft();
    }
  }
  function countLeft(item, change) {
    localChanges[item.generation_id] = (localChanges[item.generation_id] || 0) + change;
    showLeft();
  }

  function show() {
    const item = queue[0];
    if (!item) {
      figure.hidden = true;
      empty.hidden = !exhausted;
      return;
    }
    figure.hidden = false;
    empty.hidden = true;
    image.src = item.image_url;
    image.alt = `Sample to rate from ${item.experiment}, generation ${item.generation}`;
    caption.textContent = `${item.experiment} · generation ${item.generation}`;
    figure.dataset.token = item.token;
    showLeft();
  }

  function refill() {
    if (fetching || queue.length > prefetch / 2) return fetching;
    const exclude = queue.map(key).join(",");
    // Taken now: the votes made so far are ahead of this fetch in the chain, later ones behind it.
    const changesWhenSent = {...localChanges};
    fetching = outbox = outbox.then(async () => {
      try {
        const response = await fetch(`${urls.next}?count=${prefetch}&exclude=${encodeURIComponent(exclude)}`,
                                     {headers: {Accept: "application/json"}});
        const data = await response.json();
        if (!response.ok) throw new Error(data.error || response.statusText);
        const known = new Set(queue.map(key));
        const fresh = data.items.filter((i) => !known.has(key(i)));
        fresh.forEach((i) => { new Image().src = i.image_url; });  // warm the image cache
        exhausted = fresh.length === 0;
        const wasEmpty = queue.length === 0;
        queue.push(...fresh);
        setCounters(data.counters, changesWhenSent);
        if (wasEmpty) show();
      } catch (error) {
        status.textContent = `Could not load samples: ${error.message}`;
      } finally {
        fetching = null;
      }
    });
    return fetching;
  }

  function showWaiting(note) {
    if (waiting > 1 || note) {
      status.textContent = `${waiting} vote${waiting === 1 ? "" : "s"} waiting${note ? ` (${note})` : ""}…`;
    } else if (status.textContent.includes("waiting")) {
      status.textContent = "";
    }
  }

  async function post(url, body) {
    // Resolves to {ok, status, data}; throws only when the network failed.
    const response = await fetch(url, {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (error) { data = {}; }  // a 5xx may be an HTML page
    return {ok: response.ok, status: response.status, data};
  }

  function send(url, body) {
    // Chained so that an undo never overtakes the vote it undoes.
    waiting += 1;
    showWaiting();
    outbox = outbox.then(async () => {
      let attempt = 0;
      try {
        for (;;) {
          let reply = null;
          try { reply = await post(url, body); } catch (error) { reply = null; }  // offline: retry for as long as it takes
          if (reply && reply.status < 500) {
            if (reply.ok) {
              setCounters(reply.data.counters);
              showWaiting();
            } else {
              status.textContent = reply.data.error || `Refused (${reply.status}); moved on`;
            }
            return reply.data;
          }
          attempt += 1;
          if (reply && attempt >= SERVER_ERROR_ATTEMPTS) {
            status.textContent = `The server failed to save a vote (${reply.status}) ${attempt} times; it was skipped`;
            return null;
          }
          showWaiting(reply ? `server error ${reply.status}, retry ${attempt}` : `offline, retry ${attempt}`);
          await new Promise((resolve) => setTimeout(resolve, Math.min(8000, 250 * 2 ** attempt)));
        }
      } finally {
        waiting -= 1;
      }
    });
    return outbox;
  }

  function vote(up) {
    const item = queue[0];
    if (!item) return;
    queue.shift();
    show();
    send(urls.vote, {token: item.token, up, request_id: newId()});
    countLeft(item, -1);
    refill();
  }

  function skip() {
    // No vote: the server releases the item for the other raters and never serves it here again.
    const item = queue[0];
    if (!item) return;
    queue.shift();
    show();
    send(urls.skip, {token: item.token});
    refill();
  }

  function toggleHelp() {
    if (help.open) help.close(); else help.showModal();
  }

  async function undo() {
    const data = await send(urls.undo, {request_id: newId()});
    if (data && data.item) {
      queue = queue.filter((i) => key(i) !== key(data.item));
      countLeft(data.item, +1);
      queue.unshift(data.item);
      show();
    }
  }

  document.getElementById("up").addEventListener("click", () => vote(true));
  document.getElementById("down").addEventListener("click", () => vote(false));
  document.getElementById("undo").addEventListener("click", undo);
  document.getElementById("skip").addEventListener("click", skip);
  document.getElementById("show-keys").addEventListener("click", toggleHelp);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.target.closest("input, textarea")) return;
    if (help.open) {  // the key list is up: ? or h closes it (Escape does too), nothing else acts
      if (event.key === "?" || event.key === "h") { event.preventDefault(); help.close(); }
      return;
    }
    if (event.repeat) { event.preventDefault(); return; }  // a held key is one vote, not many
    const action = {
      k: () => vote(true), ArrowUp: () => vote(true), ArrowRight: () => vote(true),
      j: () => vote(false), ArrowDown: () => vote(false), ArrowLeft: () => vote(false),
      u: undo, Backspace: undo,
      s: skip, " ": skip,
      "?": toggleHelp, h: toggleHelp,
      g: () => { location.href = root.dataset.gridUrl; },
    }[event.key];
    if (action) { event.preventDefault(); action(); }
  });
  window.addEventListener("beforeunload", (event) => {
    if (waiting > 0) { event.preventDefault(); event.returnValue = ""; }
  });
  refill();
})();
