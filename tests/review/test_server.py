"""`facebatch review`: a real Chromium against a server on a free port: name, reject, split,
merge, undo, each checked in the labels table and in `facebatch export`; the token; paths."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from starlette.testclient import TestClient

from conftest import LIBRARY_MODEL, PROJECT, add_people, people_library, run
from facebatch.people.actions import label_cluster
from facebatch.people.clustering import read_assignments
from facebatch.people.labels import replay
from facebatch.review.server import Review, allowed_hosts, create_app, prepare
from facebatch.store import Library

PEOPLE = {"ann": 9, "bob": 6, "cat": 5}


@pytest.fixture
def library(tmp_path) -> Library:
    return people_library(tmp_path, PEOPLE)


def cluster_of(lib: Library, person: str) -> int:
    ids = [c for f, c in read_assignments(lib).items() if f.startswith(f"f{person}")]
    return max(set(ids), key=ids.count)


def exported(lib: Library, tmp_path) -> dict[str, tuple[str | None, str]]:
    out = tmp_path / "tags.jsonl"
    assert run("--library", lib.root, "export", out).exit_code == 0
    return {f["face_id"]: (f["person"], f["status"]) for line in out.read_text().splitlines()
            for f in json.loads(line)["faces"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(library) -> Iterator[tuple[str, Review]]:
    with serving(library) as served:
        yield served


@contextmanager
def serving(library: Library) -> Iterator[tuple[str, Review]]:
    """The review server on a free port of this machine, in a thread, for as long as the block runs."""
    review = prepare(library)
    port = free_port()
    config = uvicorn.Config(create_app(review, allowed_hosts("127.0.0.1")), host="127.0.0.1", port=port,
                            log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", review
    running.should_exit = True
    thread.join(5)


def test_the_whole_review_in_a_real_browser(server, library, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    base, _ = server
    ann, bob, cat = (cluster_of(library, p) for p in ("ann", "bob", "cat"))
    artifacts = PROJECT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            # Name a cluster from the people page.
            page.goto(base + "/")
            page.fill(f"form[action='/cluster/{ann}/name'] input[name=name]", "Ann Lee")
            page.click(f"form[action='/cluster/{ann}/name'] button")
            assert page.locator("p.flash").inner_text() == f"cluster {ann} is Ann Lee: 9 faces"
            assert replay(library.read_labels()).cluster_names["fanna000"] == "Ann Lee"
            assert exported(library, tmp_path)["fanna000"] == ("Ann Lee", "confirmed")
            page.screenshot(path=str(artifacts / "review-people.png"), full_page=True)

            # Reject one face: click to select it, then "Not Ann Lee" (the x key).
            page.goto(f"{base}/cluster/{ann}")
            page.click("figure[data-face=fanna008] figcaption")
            page.keyboard.press("x")
            page.wait_for_selector("p.flash")
            assert page.locator("p.flash").inner_text() == "1 face is not Ann Lee"
            assert replay(library.read_labels()).nots["fanna008"] == {"Ann Lee"}
            assert exported(library, tmp_path)["fanna008"][0] != "Ann Lee"

            # Split two faces off with click and shift-click.
            page.goto(f"{base}/cluster/{bob}")
            first, second = page.locator("figure.face").nth(0), page.locator("figure.face").nth(1)
            split_faces = [first.get_attribute("data-face"), second.get_attribute("data-face")]
            first.locator("figcaption").click()
            second.locator("figcaption").click(modifiers=["Shift"])
            page.click("button[value=split]")
            message = page.locator("p.flash").inner_text()
            assert message.startswith("2 faces split off into cluster ")
            assignments = read_assignments(library)
            assert assignments[split_faces[0]] == assignments[split_faces[1]] != bob
            assert {replay(library.read_labels()).tokens["split"][f][0] for f in split_faces} == {"s1/1"}

            # Merge two clusters (the form the merge suggestion uses; here posted by the page itself).
            page.goto(base + "/")
            page.evaluate(f"""() => {{
                const form = document.createElement('form');
                form.method = 'post'; form.action = '/merge';
                for (const [k, v] of [['token', document.body.dataset.token], ['back', '/'],
                                      ['cluster', '{cat}'], ['cluster', '{bob}']]) {{
                    const input = document.createElement('input'); input.name = k; input.value = v; form.append(input);
                }}
                document.body.append(form); form.submit();
            }}""")
            page.wait_for_selector("p.flash")
            assert page.locator("p.flash").inner_text() == f"clusters {cat}, {bob} are now cluster {cat}"
            assert read_assignments(library)["fboba003"] == cat

            # Undo the merge from the header (the u key), then the split.
            page.keyboard.press("u")
            page.wait_for_selector("p.flash")
            assert page.locator("p.flash").inner_text().startswith("undid action")
            assert read_assignments(library)["fboba003"] == bob
            page.click("form.undo button")
            page.wait_for_selector("p.flash")
            assert read_assignments(library)[split_faces[0]] == bob
            assert exported(library, tmp_path)["fanna000"] == ("Ann Lee", "confirmed")  # earlier actions hold
            page.screenshot(path=str(artifacts / "review-cluster.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()


def test_a_request_without_the_token_changes_nothing(library):
    review = prepare(library)
    client = TestClient(create_app(review, ["testserver"]))
    before = library.read_labels().num_rows
    for data in ({"name": "Eve"}, {"name": "Eve", "token": "guess"}):
        response = client.post(f"/cluster/{cluster_of(library, 'ann')}/name", data=data)
        assert response.status_code == 403
    assert client.post("/undo", data={}).status_code == 403
    assert library.read_labels().num_rows == before


def test_no_path_from_a_request_reaches_the_file_system(library):
    client = TestClient(create_app(prepare(library), ["testserver"]))
    for path in ("/thumb/..%2F..%2Fetc%2Fpasswd.jpg", "/static/..%2Fserver.py", "/static/pages.py",
                 "/original/..%2F..%2Fetc%2Fpasswd", "/photo/nope"):
        assert client.get(path).status_code == 404, path
    assert client.get("/thumb/fanna000.jpg").headers["content-type"] == "image/jpeg"


def test_other_hosts_are_refused_and_redirects_stay_on_the_site(library):
    review = prepare(library)
    client = TestClient(create_app(review, allowed_hosts("127.0.0.1")), base_url="http://evil.example")
    assert client.get("/").status_code == 400  # DNS rebinding: not our Host header
    client = TestClient(create_app(review, ["testserver"]))
    response = client.post(f"/cluster/{cluster_of(library, 'ann')}/name", follow_redirects=False,
                           data={"name": "Ann", "token": review.token, "back": "https://evil.example/"})
    assert response.status_code == 303 and response.headers["location"].startswith("/?msg=")


def test_a_review_during_a_scan_waits_then_says_why(library):
    review = prepare(library)
    review.wait = 0.2
    client = TestClient(create_app(review, ["testserver"]))
    with library.lock():
        response = client.post(f"/cluster/{cluster_of(library, 'ann')}/name",
                               data={"name": "Ann", "token": review.token, "back": "/"}, follow_redirects=False)
    assert response.status_code == 303 and "kind=error" in response.headers["location"]
    assert "nothing%20changed" in response.headers["location"]
    assert library.read_labels().num_rows == 0


def test_cli_review_refuses_a_library_without_clusters(tmp_path):
    lib = Library(tmp_path / "lib")
    lib.create(LIBRARY_MODEL)
    add_people(lib, tmp_path / "photos", {"ann": 3}, "a")
    result = run("--library", lib.root, "review")
    assert (result.exit_code, result.output) == (2, "Error: no clusters yet: run `facebatch cluster` first\n")


def test_pages_of_a_cluster_past_the_end_show_the_last(library, monkeypatch):
    from facebatch.review import pages

    monkeypatch.setattr(pages, "FACES_PER_PAGE", 4)
    client = TestClient(create_app(prepare(library), ["testserver"]))
    cluster = cluster_of(library, "ann")

    def shown(query: str) -> set[str]:
        html = client.get(f"/cluster/{cluster}{query}").text
        return {part.split(".jpg")[0] for part in html.split("/thumb/")[1:] if part.startswith("fann")}

    first, second, last = shown(""), shown("?page=2"), shown("?page=3")
    assert len(first) == len(second) == 4 and len(last) == 1  # ann's 9 faces, 4 a page
    assert not first & second and not second & last
    assert shown("?page=99") == last and shown("?page=nope") == first


def test_cli_review_on_a_port_in_use_is_one_line_and_exit_2(library):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = run("--library", library.root, "review", "--port", port)
    finally:
        taken.close()
    assert (result.exit_code, result.output) == (
        2, f"Error: port {port} on 127.0.0.1 is in use (another `facebatch review`, or another program?); "
           "--port N picks another\n")


def browser_page(playwright, chromium: str):
    browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
    return browser, browser.new_page(viewport={"width": 1200, "height": 900})


def test_a_face_seen_once_is_named_in_the_browser_from_its_page_and_from_its_photo(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    library = people_library(tmp_path, {"ann": 9, "bob": 6, "dan": 1, "cat": 1})
    assert read_assignments(library)["fdana000"] == -1 and read_assignments(library)["fcata000"] == -1  # seen once
    with serving(library) as (base, _), playwright.sync_playwright() as p:
        browser, page = browser_page(p, chromium)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            # The unclustered page: select the face, type a name, "This is…".
            page.goto(base + "/unclustered")
            page.click("figure[data-face=fdana000] figcaption")
            page.fill("#faces input[name=name]", "Dan Moe")
            page.click("#faces button[value=name]")
            page.wait_for_selector("p.flash")
            assert page.locator("p.flash").inner_text() == "1 face is Dan Moe"
            assert replay(library.read_labels()).face_names["fdana000"] == ("Dan Moe", "face")
            assert exported(library, tmp_path)["fdana000"] == ("Dan Moe", "confirmed")

            # The photo page: its face's box opens that face's card, with the same actions ("not").
            page.goto(base + "/unclustered")
            page.click("figure[data-face=fcata000] a.path")  # to the photo
            page.click("a.box")
            assert page.evaluate("location.hash") == "#f-fcata000"
            page.click("figure[data-face=fcata000] figcaption")
            page.fill("#faces input[name=person]", "Ann")
            page.click("#faces button[value=not]")
            page.wait_for_selector("p.flash")
            assert page.locator("p.flash").inner_text() == "1 face is not Ann"
            assert replay(library.read_labels()).nots["fcata000"] == {"Ann"}
            assert errors == []
        finally:
            browser.close()


def test_an_action_waiting_for_a_scan_never_holds_up_the_pages(library):
    review = prepare(library)
    review.wait = 3.0
    waiting: dict[str, float] = {}
    # One client, opened: every request runs on the same event loop, as in the real server.
    with TestClient(create_app(review, ["testserver"])) as client:
        def name_while_locked() -> None:
            started = time.monotonic()
            client.post(f"/cluster/{cluster_of(library, 'ann')}/name", data={"name": "Ann", "token": review.token,
                                                                              "back": "/"}, follow_redirects=False)
            waiting["action"] = time.monotonic() - started

        with library.lock():  # a scan holds the library
            action = threading.Thread(target=name_while_locked)
            action.start()
            time.sleep(0.3)  # the click is now waiting for the lock
            started = time.monotonic()
            assert client.get("/").status_code == 200
            assert time.monotonic() - started < 1.5  # the page did not wait for the click
            time.sleep(0.2)
        action.join(10)
    assert waiting["action"] >= 0.4  # it waited for the lock, then went through
    assert replay(library.read_labels()).cluster_names["fanna000"] == "Ann"


def test_the_queue_asks_about_a_named_clusters_edge_by_keys_with_reject_and_undo(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    library = people_library(tmp_path, {"ann": 12, "bob": 6})
    named = label_cluster(library, cluster_of(library, "ann"), "Ann")
    assert (named.faces, named.waiting) == (10, 2)  # the outer tenth of 12 waits for a look
    with serving(library) as (base, _), playwright.sync_playwright() as p:
        browser, page = browser_page(p, chromium)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        asked = "[data-queue] input[name=face]"
        try:
            page.goto(base + "/queue")
            assert page.locator("h1").inner_text() == "Is this Ann?"
            first = page.locator(asked).first.get_attribute("value")
            assert exported(library, tmp_path)[first][1] == "suggested"
            page.keyboard.press("y")
            page.wait_for_selector("p.flash")
            assert page.locator("p.flash").inner_text() == "1 face is Ann"
            assert exported(library, tmp_path)[first] == ("Ann", "confirmed")

            second = page.locator(asked).first.get_attribute("value")
            assert second != first
            page.keyboard.press("n")
            page.wait_for_selector("p.flash")
            assert page.locator("p.flash").inner_text() == "1 face is not Ann"
            assert replay(library.read_labels()).nots[second] == {"Ann"}
            assert exported(library, tmp_path)[second][0] is None
            assert page.locator("h1").inner_text() == "Nothing waits for a look"

            page.keyboard.press("u")
            page.wait_for_selector("p.flash")
            assert page.locator("p.flash").inner_text().startswith("undid action")
            assert not replay(library.read_labels()).nots.get(second)
            assert page.locator(asked).first.get_attribute("value") == second  # asked again

            page.keyboard.press("s")
            page.wait_for_url("**/queue?skip=1")
            assert page.locator("h1").inner_text() == "Nothing waits for a look"
            assert "You skipped 1 face" in page.locator("main").inner_text()
            assert errors == []
        finally:
            browser.close()
