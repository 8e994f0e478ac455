// CelebBasis tab: progress while training, Send to txt2img (or the standalone prompt box), name hints,
// delete confirmation.
// In the WebUI this file is injected after the host's script.js (gradioApp, randomId,
// requestProgress, updateInput, switch_to_txt2img exist). The standalone UI loads it too,
// where those helpers are missing: then progress comes from ./celebbasis/v1/progress.
(function () {
    "use strict";

    var NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$/;

    function root() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function el(id) {
        return root().querySelector("#" + id);
    }

    function newTaskId() {
        if (typeof randomId === "function") {
            return randomId(); // the host's: "task(...)"
        }
        return "task(" + Math.random().toString(36).slice(2, 12) + ")";
    }

    function setProgressText(text) {
        var box = el("celebbasis_progress");
        if (!box) {
            return;
        }
        var line = box.querySelector(".celebbasis-progress-line");
        if (!line) {
            line = document.createElement("div");
            line.className = "celebbasis-progress-line";
            box.appendChild(line);
        }
        line.textContent = text;
    }

    function formatSeconds(seconds) {
        if (seconds === null || seconds === undefined || !isFinite(seconds)) {
            return "";
        }
        seconds = Math.max(0, Math.round(seconds));
        var minutes = Math.floor(seconds / 60);
        var rest = seconds % 60;
        return minutes + ":" + (rest < 10 ? "0" : "") + rest;
    }

    // Standalone: poll our own progress endpoint until the run is over.
    function pollOwnProgress() {
        var seenBusy = false;
        var started = Date.now();
        function tick() {
            fetch("./celebbasis/v1/progress", {credentials: "same-origin"})
                .then(function (response) { return response.json(); })
                .then(function (p) {
                    if (p.busy) {
                        seenBusy = true;
                        // before the first step the message says what is going on (e.g. a face-model download)
                        var text = p.total && (p.step || !p.message) ? "Step " + p.step + " / " + p.total
                            : (p.message ? p.message.charAt(0).toUpperCase() + p.message.slice(1) : "Preparing");
                        if (p.loss !== null && p.loss !== undefined) {
                            text += " · loss " + Number(p.loss).toFixed(4);
                        }
                        if (p.eta_seconds !== null && p.eta_seconds !== undefined && p.step) {
                            // measured from the first steps
                            text += " · about " + formatSeconds(p.eta_seconds) + " left";
                        }
                        setProgressText(text);
                    }
                    if (p.busy || (!seenBusy && Date.now() - started < 15000)) {
                        setTimeout(tick, 500);
                    } else {
                        setProgressText("");
                    }
                })
                .catch(function () { setProgressText(""); });
        }
        setTimeout(tick, 300);
    }

    // The host's bar (A1111, Forge: a div.progressDiv put before the element it is given).
    function hostDrewBar(box) {
        return Boolean(box.parentNode && box.parentNode.querySelector(".progressDiv"));
    }

    // One line from the host's /internal/progress answer: its text (our "CelebBasis: step 5/300, loss ...")
    // and the time left (only while the run is active: before that SD.Next's eta is the previous job's).
    function hostProgressLine(res) {
        var text = res && res.textinfo ? String(res.textinfo) : "";
        if (text && res.active && res.eta) {
            text += " · about " + formatSeconds(res.eta) + " left";
        }
        return text;
    }

    // Train and Preview: give the run a task id (first input) and show the host's progress bar (with its
    // ETA) under the Train button; in the standalone UI, our own progress line there. SD.Next's
    // requestProgress draws nothing into the element (only on its Generate buttons and the page title):
    // there the host's progress answers are written as our line.
    function withProgress(args) {
        args = Array.from(args);
        var id = newTaskId();
        args[0] = id;
        var box = el("celebbasis_progress");
        if (typeof requestProgress === "function" && box) {
            var wrote = false;
            requestProgress(id, box, null, function () {
                if (wrote) {
                    setProgressText("");
                }
            }, function (res) {
                if (!hostDrewBar(box)) {
                    wrote = true;
                    setProgressText(hostProgressLine(res));
                }
            });
        } else {
            pollOwnProgress();
        }
        return args;
    }

    window.celebbasis_train = function () {
        return withProgress(arguments);
    };

    window.celebbasis_preview = function () {
        return withProgress(arguments);
    };

    // Send to txt2img: append the token to the txt2img prompt and switch tabs. The standalone
    // UI has no txt2img: the token goes to its own prompt box below the tab.
    window.celebbasis_send_to_txt2img = function () {
        var args = Array.from(arguments);
        var token = String(args[0] || "").trim();
        if (!token) {
            return [];
        }
        var prompt = root().querySelector("#txt2img_prompt textarea");
        var own = root().querySelector("#celebbasis_render_prompt textarea");
        if (!prompt && own) {
            var current = own.value.replace(/\s+$/, "");
            own.value = current ? current + ", " + token : "a photo of " + token;
            own.dispatchEvent(new Event("input", {bubbles: true}));
            own.scrollIntoView({block: "center"});
            own.focus();
            return [];
        }
        if (!prompt) {
            if (navigator.clipboard && navigator.clipboard.writeText) {
                navigator.clipboard.writeText(token).catch(function () {});
            }
            setProgressText("No txt2img tab here: '" + token + "' was copied to the clipboard.");
            return [];
        }
        var text = prompt.value.replace(/\s+$/, "");
        prompt.value = text ? text + ", " + token : "a photo of " + token;
        if (typeof updateInput === "function") {
            updateInput(prompt);
        } else {
            prompt.dispatchEvent(new Event("input", {bubbles: true}));
        }
        if (typeof switch_to_txt2img === "function") {
            switch_to_txt2img();
        }
        return [];
    };

    window.celebbasis_confirm_delete = function () {
        var args = Array.from(arguments);
        if (args[0] && !confirm("Delete the identity '" + args[0] + "'? Its file is removed.")) {
            args[0] = null;
        }
        return args;
    };

    // Name hints as the user types (the server's check follows with clashes and vocabulary).
    function hintFor(value) {
        value = value.trim();
        if (!value) {
            return "";
        }
        if (/[\/\\:]/.test(value) || value.indexOf("..") >= 0) {
            return "No path separators, drive letters or '..'";
        }
        if (value.length > 64) {
            return "At most 64 characters";
        }
        if (!NAME_PATTERN.test(value)) {
            return "Letters, digits, '_' and '-' only, starting with a letter or digit";
        }
        return "";
    }

    // One listener for the whole page (the name box may be rendered, or re-rendered, at any time).
    function onNameInput(event) {
        var input = event.composedPath ? event.composedPath()[0] : event.target;
        if (!input || !input.closest || !input.closest("#celebbasis_name")) {
            return;
        }
        // attributes gradio does not manage (it rewrites the class lists of its own nodes)
        var hint = hintFor(input.value || "");
        if (hint) {
            input.setAttribute("aria-invalid", "true");
        } else {
            input.removeAttribute("aria-invalid");
        }
        input.title = hint;
    }

    document.addEventListener("input", onNameInput, true);
})();
