// Grid mode: toggle samples down, submit the page at once. Keyboard: arrows move, Space toggles,
// Enter submits, Esc goes back to one-at-a-time rating.
(function () {
  "use strict";
  const form = document.getElementById("grid-form");
  if (!form) return;
  const toggles = Array.from(form.querySelectorAll("button.toggle"));
  const columns = 4;
  let submitted = false;

  function flip(button) {
    const input = button.closest(".cell").querySelector("input");
    const down = input.value === "up";
    input.value = down ? "down" : "up";
    button.setAttribute("aria-pressed", String(down));
    button.setAttribute("aria-label", button.getAttribute("aria-label").replace(/: (up|down)$/, down ? ": down" : ": up"));
  }

  toggles.forEach((button) => button.addEventListener("click", () => flip(button)));
  form.addEventListener("submit", (event) => {
    if (submitted) event.preventDefault();  // a double Enter sends the page once
    submitted = true;
  });
  document.addEventListener("keydown", (event) => {
    const index = toggles.indexOf(document.activeElement);
    const move = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns}[event.key];
    if (move !== undefined) {
      event.preventDefault();
      const next = index < 0 ? 0 : Math.max(0, Math.min(toggles.length - 1, index + move));
      toggles[next].focus();
    } else if (event.key === "Enter") {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "Escape") {
      location.href = "../";
    }
  });
  if (toggles.length) toggles[0].focus();
})();
