// facebatch review: selection with click and shift-click, "select all below", and the keyboard.
// Everything here is an enhancement: every action is a plain form that works without it.
(function () {
  "use strict";
  const faces = Array.from(document.querySelectorAll("figure.face[data-face]"));
  const boxes = faces.map((f) => f.querySelector("input[type=checkbox]"));
  let last = -1;

  function show(i) {
    faces[i].classList.toggle("selected", Boolean(boxes[i] && boxes[i].checked));
  }
  function select(i, on) {
    if (!boxes[i]) return;
    boxes[i].checked = on;
    show(i);
  }
  faces.forEach((face, i) => {
    if (!boxes[i]) return;
    face.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;  // links still open the photo
      const on = event.target === boxes[i] ? boxes[i].checked : !boxes[i].checked;
      if (event.shiftKey && last >= 0) {
        const [a, b] = last < i ? [last, i] : [i, last];
        for (let j = a; j <= b; j++) select(j, true);
      } else {
        select(i, on);
      }
      last = i;
      face.focus();
    });
  });
  const below = document.querySelector("[data-select=below]");
  if (below) below.addEventListener("click", () => {
    const from = last >= 0 ? last : 0;
    for (let j = from; j < faces.length; j++) select(j, true);
  });

  function focused() { return faces.indexOf(document.activeElement); }
  function columns() {
    if (faces.length < 2) return 1;
    const top = faces[0].offsetTop;
    const n = faces.findIndex((f) => f.offsetTop !== top);
    return n < 0 ? faces.length : n;
  }
  function submit(action) {
    const form = document.getElementById("faces");
    if (!form) return;
    const button = form.querySelector(`button[name=action][value=${action}]`);
    if (button) button.click();
  }
  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    // The queue: one face, "Is this NAME?": y yes, n not NAME, s skip (u undo, below).
    const answer = document.querySelector(`[data-queue] [data-key="${event.key}"]`);
    if (answer) {
      answer.click();
      event.preventDefault();
      return;
    }
    const i = focused();
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() }[event.key];
    if (step !== undefined && faces.length) {
      const next = Math.min(faces.length - 1, Math.max(0, (i < 0 ? 0 : i + step)));
      faces[next].focus();
      event.preventDefault();
    } else if (event.key === " " && i >= 0) {
      select(i, !boxes[i].checked);
      last = i;
      event.preventDefault();
    } else if (event.key === "n") {
      const name = document.querySelector("#faces input[name=name], form.name input[name=name]");
      if (name) { name.focus(); event.preventDefault(); }
    } else if (event.key === "x") {
      if (i >= 0 && boxes[i] && !boxes.some((b) => b && b.checked)) select(i, true);
      // Where "not" needs a name typed (faces in no cluster, a photo's faces), go to its box first.
      const person = document.querySelector("#faces input[name=person]:not([type=hidden])");
      if (person && !person.value.trim()) { person.focus(); event.preventDefault(); return; }
      submit("not");
    } else if (event.key === "u") {
      const undo = document.querySelector("form.undo button");
      if (undo && !undo.disabled) undo.click();
    }
  });
})();
