"""The review page end to end in headless Chromium against the real API and workers.

Scenario order matters inside `test_a_radiologist_reviews_edits_merges_and_signs_a_study` (one
study, one flow); the other tests use their own studies or sessions.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from service.dev.system import wait_for

pytest.register_assert_rewrite("tests.helpers.ui_fixtures")
from tests.helpers.ui_fixtures import HOSTILE, PASSWORDS, PREVIEW_SIDE, save_screenshot, sign_in  # noqa: E402

pytest_plugins = ["tests.helpers.ui_fixtures"]
pytestmark = pytest.mark.slow

# The screenshots are always taken and size-checked; they replace docs/review_*.png only with
# RADREPORT_UPDATE_DOCS=1, so a test run leaves the checkout as it found it.
DOCS = Path(__file__).resolve().parents[2] / "docs"
UPDATE_DOCS = os.environ.get("RADREPORT_UPDATE_DOCS") == "1"
ADDED_BY_RADIOLOGIST = "Possible small right pneumothorax."
ADDED_BY_API = "Degenerative changes of the thoracic spine."


@pytest.fixture
def page(browser, seeded):
    context = browser.new_context(viewport={"width": 1920, "height": 1080}, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


def current_version(client, report_id: str) -> int:
    """The version number of the report's current text, read through the API."""
    return client.get(f"/v1/reports/{report_id}").json()["current"]["version"]


def token_refused(client, token: str) -> bool:
    """Whether the API answers 401 to `token`."""
    return client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def wait_study_shown(page) -> None:
    """Wait until the study in the address bar (not the one before it) shows image and draft."""
    page.wait_for_function(
        "document.body.dataset.studyReady === 'true' && location.hash === "
        "'#/study/' + encodeURIComponent(document.body.dataset.studyReport)")


def open_report(page, report_id: str) -> float:
    """Click the study's link in the worklist; seconds until its image and draft are shown."""
    link = page.locator(f'tr[data-report-id="{report_id}"] a.study-link')
    started = time.perf_counter()
    link.click()
    wait_study_shown(page)
    return time.perf_counter() - started


def section(page, name: str):
    return page.get_by_label(name, exact=True)


def test_a_radiologist_reviews_edits_merges_and_signs_a_study(page, seeded, tmp_path):
    shots = DOCS if UPDATE_DOCS else tmp_path
    study = seeded.realistic
    report_id = study["report_id"]
    sign_in(page, seeded.api_url, "dr-ada")

    # The worklist: state, age, priority, assignee for every drafted study, highest priority first.
    rows = page.locator("#worklist-body tr")
    rows.first.wait_for()
    ids = [rows.nth(i).get_attribute("data-report-id") for i in range(rows.count())]
    assert set(ids) >= {report_id, *(s["report_id"] for s in seeded.noise)}
    assert ids[0] == seeded.stat  # priority 20 first, then 10
    assert ids[1] == report_id
    hostile_row = page.locator(f'tr[data-report-id="{seeded.hostile["report_id"]}"]')
    assert "dr-bob" in hostile_row.inner_text()
    assert "Urgent (10)" in page.locator(f'tr[data-report-id="{report_id}"]').inner_text()
    # TRIAGE_FINDINGS=Fracture: the draft's rib fracture flags the row (and raised it to 10)
    assert "⚑ Fracture" in page.locator(f'tr[data-report-id="{report_id}"]').inner_text()
    page.set_viewport_size({"width": 1280, "height": 800})
    top = {"x": 0, "y": 0, "width": 1280, "height": 420}
    assert save_screenshot(page, shots / "review_worklist.png", clip=top) < 400_000
    page.set_viewport_size({"width": 1920, "height": 1080})

    # Open the study: both images and the draft by section.
    seconds = open_report(page, report_id)
    assert page.locator("#triage-info").inner_text() == "⚑ Triage: Fracture"
    in_page_ms = int(page.locator("body").get_attribute("data-study-shown-ms"))
    print(f"\nstudy click -> image and draft shown: {seconds * 1000:.0f} ms "
          f"(measured in the page: {in_page_ms} ms)")
    frontal = page.locator('canvas[data-view^="frontal"]')
    lateral = page.locator('canvas[data-view^="lateral"]')
    frontal.wait_for()
    lateral.wait_for()
    assert section(page, "Findings").input_value() in study["draft"]
    assert section(page, "Impression").input_value() in study["draft"]
    assert frontal.get_attribute("data-resolution") == "preview"
    assert frontal.get_attribute("data-source-width") == str(PREVIEW_SIDE)

    # Window/level by dragging on the frontal image, a preset, invert, full resolution on demand.
    before = frontal.screenshot()
    box = frontal.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 120, box["y"] + box["height"] / 2 + 60, steps=6)
    page.mouse.up()
    page.wait_for_function("document.querySelector('canvas[data-view^=frontal]').dataset.window"
                           " !== '0.500,1.000'")
    center, width = map(float, frontal.get_attribute("data-window").split(","))
    assert width < 1.0 and center > 0.5
    assert frontal.screenshot() != before
    tools = page.get_by_role("toolbar", name=re.compile(r"^Frontal \((PA|AP)\) image tools$"))
    tools.get_by_role("combobox").select_option("lung")
    assert frontal.get_attribute("data-window") == "0.400,0.700"
    frontal.focus()
    page.keyboard.press("i")
    assert tools.get_by_role("button", name="Invert").get_attribute("aria-pressed") == "true"
    inverted = frontal.screenshot()
    page.keyboard.press("i")
    assert tools.get_by_role("button", name="Invert").get_attribute("aria-pressed") == "false"
    assert frontal.screenshot() != inverted
    tools.get_by_role("button", name="Full resolution").click()
    page.wait_for_selector('canvas[data-view^="frontal"][data-resolution="full"]')
    assert frontal.get_attribute("data-source-width") == "256"
    readout = page.locator("figure.viewport output").first
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)  # zoom in at the pointer
    page.wait_for_function("!document.querySelector('figure.viewport output').textContent"
                           ".endsWith('· 100%')")
    assert int(readout.inner_text().rsplit("·", 1)[1].strip().rstrip("%")) > 100
    zoomed = frontal.screenshot()
    page.keyboard.down("Shift")
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 80, box["y"] + box["height"] / 2 + 40, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    assert frontal.screenshot() != zoomed  # panned
    assert frontal.get_attribute("data-window") == "0.400,0.700"  # a pan is not a window change
    tools.get_by_role("button", name="Reset").click()
    tools.get_by_role("combobox").select_option("lung")

    # Claim, edit a section: the findings and the diff against the AI draft follow the text.
    page.get_by_role("button", name="Claim to edit").click()
    findings = section(page, "Findings")
    page.wait_for_function("!document.getElementById('section-0-findings').readOnly")
    findings.press("End")
    findings.type(" " + ADDED_BY_RADIOLOGIST)
    page.wait_for_selector("#diff-text ins")
    inserted = page.locator("#diff-text ins").all_inner_texts()
    assert ADDED_BY_RADIOLOGIST.split()[-1] in inserted[-1] or "pneumothorax" in " ".join(inserted)
    page.wait_for_function("[...document.querySelectorAll('#findings-text mark.f-uncertain')]"
                           ".some(m => m.textContent === 'pneumothorax')")
    page.keyboard.press("Control+s")
    page.get_by_text("Saved as version 2.").first.wait_for()

    # Meanwhile the same report is edited through the API (another window of the same radiologist).
    with seeded.client("dr-ada") as ada:
        wait_for(lambda: current_version(ada, report_id) == 2, 10, what="version 2")
        current = ada.get(f"/v1/reports/{report_id}").json()["current"]
        other = current["text"].replace("IMPRESSION:", f"{ADDED_BY_API}\n\nIMPRESSION:")
        saved_by_api = ada.put(f"/v1/reports/{report_id}", json={"text": other},
                               headers={"If-Match": '"2"'})
        assert saved_by_api.status_code == 200

    # The page's next save meets the conflict: a clear message and a merge view; merged, it saves.
    impression = section(page, "Impression")
    impression.press("End")
    impression.type(" Recommend follow-up radiograph.")
    page.keyboard.press("Control+s")
    merge = page.get_by_role("dialog", name="Someone saved this report meanwhile")
    merge.wait_for()
    assert "version 3" in page.locator("#save-message").inner_text()
    assert ADDED_BY_API in page.locator("#merge-theirs").inner_text()
    mine = page.get_by_label("Merged text (starts as yours; edit it to combine both)")
    merged = mine.input_value().replace("IMPRESSION:", f"{ADDED_BY_API}\n\nIMPRESSION:")
    mine.fill(merged)
    merge.get_by_role("button", name="Save merged text").click()
    page.get_by_text("Merged and saved as version 4.").first.wait_for()
    with seeded.client("dr-ada") as ada:
        wait_for(lambda: current_version(ada, report_id) == 4, 10, what="version 4")
        saved = ada.get(f"/v1/reports/{report_id}").json()["current"]
    assert saved["version"] == 4 and saved["text"] == merged
    assert ADDED_BY_RADIOLOGIST in saved["text"] and ADDED_BY_API in saved["text"]
    assert "Recommend follow-up radiograph." in saved["text"]
    page.wait_for_selector("#diff-text ins")
    assert save_screenshot(page, shots / "review_study.png") < 400_000

    # Sign: confirmation with the meaning, a wrong password is refused, the right one signs.
    page.keyboard.press("Control+Shift+S")
    sign = page.get_by_role("dialog", name="Sign this report")
    sign.wait_for()
    assert "version 4" in sign.inner_text()
    assert "approve this report as the final report" in sign.inner_text()
    assert sign.get_by_label("approval", exact=False).is_checked()
    sign.get_by_label("Re-enter your password").fill("not-my-password")
    sign.get_by_role("button", name="Sign", exact=True).click()
    sign.get_by_text("The password is not correct. Nothing was signed.").wait_for()
    sign.get_by_label("Re-enter your password").fill(PASSWORDS["dr-ada"])
    sign.get_by_role("button", name="Sign", exact=True).click()
    page.get_by_text("Signed by dr-ada").first.wait_for()
    assert page.locator("#report-status").inner_text() == "final"
    assert "signed by dr-ada" in page.locator("#claim-info").inner_text()
    assert section(page, "Findings").get_attribute("readonly") is not None

    # History: every version with its diff and every event, oldest first.
    page.keyboard.press("Alt+h")
    versions = page.locator("#history-versions > li")
    versions.nth(3).wait_for()
    numbers = [versions.nth(i).get_attribute("data-version") for i in range(versions.count())]
    assert numbers == ["1", "2", "3", "4"]
    assert "signed" in versions.nth(3).inner_text()
    events = page.locator("#history-events").inner_text()
    for action in ("claim", "edit", "sign"):
        assert action in events
    assert events.index("claim") < events.index("sign")


def test_report_text_with_html_and_script_shows_as_text(page, seeded):
    sign_in(page, seeded.api_url, "dr-ada")
    open_report(page, seeded.hostile["report_id"])
    findings = section(page, "Findings")
    assert findings.input_value().startswith("<script>window.__pwned = 1</script><img src=x")
    assert findings.get_attribute("readonly") is not None  # dr-bob holds the claim
    for container in ("#findings-text", "#diff-text"):
        box = page.locator(container)
        assert box.locator("script, img, iframe, b").count() == 0
        assert "<script>window.__pwned = 1</script>" in box.inner_text()
    assert "<iframe src=\"/v1/me\"></iframe>" in page.locator("#findings-text").inner_text()
    page.keyboard.press("Alt+h")
    page.locator("#history-versions > li").nth(1).wait_for()
    assert page.locator("#pane-history").locator("script, img, iframe, b").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert HOSTILE.splitlines()[0][:40] in page.locator("#history-versions").inner_text()


PRESET_DIFFERENCE = """async ([studyId, preset]) => {
    const figure = [...document.querySelectorAll('figure.viewport')]
        .find(f => f.viewport.image.index === 1);
    const viewport = figure.viewport;
    viewport.applyPreset(preset);
    const token = JSON.parse(sessionStorage.getItem('radreport.session')).token;
    const response = await fetch(`/v1/studies/${studyId}/images/1.png?window=${preset}`,
                                 {headers: {Authorization: `Bearer ${token}`}});
    const bitmap = await createImageBitmap(await response.blob());
    const scratch = new OffscreenCanvas(bitmap.width, bitmap.height);
    scratch.getContext('2d').drawImage(bitmap, 0, 0);
    const server = scratch.getContext('2d').getImageData(0, 0, bitmap.width, bitmap.height).data;
    const page = viewport.processed.getContext('2d')
        .getImageData(0, 0, bitmap.width, bitmap.height).data;
    let worst = 0;
    for (let i = 0; i < server.length; i += 4) {
        worst = Math.max(worst, Math.abs(server[i] - page[i]));
    }
    return [worst, viewport.processed.width === bitmap.width,
            viewport.processed.height === bitmap.height];
}"""


@pytest.mark.parametrize("preset", ["lung", "bone"])
def test_a_preset_in_the_page_shows_what_the_server_renders_with_it(page, seeded, preset):
    sign_in(page, seeded.api_url, "dr-bob")
    open_report(page, seeded.routine)
    worst, same_width, same_height = page.evaluate(
        PRESET_DIFFERENCE, [seeded.noise[1]["study_id"], preset]
    )
    assert same_width and same_height
    # the page windows the 8-bit full-range render; the server windows the float image
    assert worst <= 2


def worklist_ids(page) -> list[str]:
    rows = page.locator("#worklist-body tr[data-report-id]")
    return rows.evaluate_all("rows => rows.map(r => r.dataset.reportId)")


def wait_worklist(page, predicate, what: str) -> list[str]:
    """The worklist's report ids once `predicate` holds for them (the page reloads the worklist
    after each change)."""
    wait_for(lambda: predicate(worklist_ids(page)), 10, what=what)
    return worklist_ids(page)


def test_the_worklist_filters_sorts_and_claims(page, seeded):
    sign_in(page, seeded.api_url, "dr-bob")
    page.locator("#worklist-body tr").first.wait_for()
    everything = worklist_ids(page)
    hostile, first = seeded.hostile["report_id"], seeded.stat
    page.get_by_label("Assignee", exact=True).select_option("none")
    wait_worklist(page, lambda ids: hostile not in ids and first in ids, "unassigned reports only")
    page.get_by_label("Assignee", exact=True).select_option("me")
    wait_worklist(page, lambda ids: ids == [hostile], "dr-bob's reports only")
    page.get_by_label("Assignee", exact=True).select_option("")
    page.get_by_label("Min. priority", exact=True).fill("10")
    page.get_by_label("Min. priority", exact=True).dispatch_event("change")
    urgent = set(everything) & {first, seeded.realistic["report_id"]}
    wait_worklist(page, lambda ids: set(ids) == urgent, "priority 10 and more")
    page.get_by_label("Min. priority", exact=True).fill("")
    page.get_by_label("Min. priority", exact=True).dispatch_event("change")
    wait_worklist(page, lambda ids: set(ids) == set(everything), "every open report again")
    assert worklist_ids(page)[0] == first  # priority 20 first
    for sort in ("age", "updated"):
        with seeded.client("dr-bob") as bob:
            items = bob.get("/v1/worklist", params={"sort": sort}).json()["items"]
            expected = [r["report_id"] for r in items]
        page.get_by_label("Sort by", exact=True).select_option(sort)
        wait_worklist(page, lambda ids, expected=expected: ids == expected,
                      f"the worklist sorted by {sort}")
    # edited last during seeding: the most recently updated report comes first
    assert worklist_ids(page)[0] == hostile
    page.get_by_role("button", name=f"Claim study …{first_uid(seeded, first)}").click()
    page.locator(f'tr[data-report-id="{first}"]').get_by_text("dr-bob").wait_for()
    with seeded.client("dr-bob") as bob:
        assert bob.get(f"/v1/reports/{first}").json()["claimed_by"] == "dr-bob"


def first_uid(seeded, report_id: str) -> str:
    with seeded.client("dr-bob") as bob:
        return bob.get(f"/v1/reports/{report_id}").json()["study_uid"][-12:]


def test_next_unread_is_one_key_away_and_studies_step_by_keyboard(page, seeded):
    sign_in(page, seeded.api_url, "dr-bob")
    page.locator("#worklist-body tr").first.wait_for()
    first_unread = page.locator("#worklist-body tr.unread").first.get_attribute("data-report-id")
    page.keyboard.press("n")
    wait_study_shown(page)
    assert page.url.endswith(f"#/study/{first_unread}")
    page.keyboard.press("Alt+n")
    page.wait_for_function(f"!location.hash.endsWith('{first_unread}')")
    wait_study_shown(page)
    page.keyboard.press("Alt+p")
    page.wait_for_function(f"location.hash.endsWith('{first_unread}')")
    wait_study_shown(page)
    # Faster than the page loads: each step starts from the study being opened, not the last shown.
    page.keyboard.press("Alt+n")
    page.keyboard.press("Alt+p")
    wait_study_shown(page)
    assert page.url.endswith(f"#/study/{first_unread}")
    page.keyboard.press("Escape")
    page.get_by_role("heading", name="Worklist").wait_for()
    page.keyboard.press("n")
    page.wait_for_function(f"!location.hash.endsWith('{first_unread}')"
                           " && location.hash.startsWith('#/study/')")


def test_signing_out_and_an_ended_session_return_to_the_sign_in_form(page, seeded):
    sign_in(page, seeded.api_url, "dr-bob")
    token = page.evaluate("JSON.parse(sessionStorage.getItem('radreport.session')).token")
    with seeded.client("dr-bob") as bob:  # the session ends behind the page (as on expiry)
        signed_out = bob.post("/v1/logout", headers={"Authorization": f"Bearer {token}"})
        assert signed_out.status_code == 204
        wait_for(lambda: token_refused(bob, token), 10, what="the token to be refused")
    page.get_by_role("button", name="Refresh").click()
    page.get_by_text("Your session has ended").wait_for()
    assert page.get_by_role("heading", name="Sign in to review reports").is_visible()

    sign_in(page, seeded.api_url, "dr-bob")
    token = page.evaluate("JSON.parse(sessionStorage.getItem('radreport.session')).token")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("You are signed out.").wait_for()
    with seeded.client("dr-bob") as bob:
        wait_for(lambda: token_refused(bob, token), 10, what="the signed-out token to be refused")


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)])
def test_the_study_view_fits_the_screen_with_labelled_controls(browser, seeded, size):
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, bypass_csp=True)
    page = context.new_page()
    try:
        sign_in(page, seeded.api_url, "dr-bob")
        open_report(page, seeded.routine)
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        for selector in ("canvas[data-view^=frontal]", "canvas[data-view^=lateral]",
                         "#editor textarea", "#diff-text", "#findings-text", "#sign-button",
                         "#save-button"):
            box = page.locator(selector).first.bounding_box()
            assert box and box["width"] > 40, selector
            assert box["x"] + box["width"] <= size[0] and box["y"] < size[1], selector
        unlabeled = page.evaluate("""[...document.querySelectorAll(
                '#study-view button, #study-view select, #study-view textarea, #study-view canvas')]
            .filter(e => e.offsetParent !== null)
            .filter(e => !(e.getAttribute('aria-label') || (e.labels && e.labels.length)
                           || e.textContent.trim()))
            .map(e => e.outerHTML.slice(0, 80))""")
        assert unlabeled == []
        order = []
        page.locator("#back-button").focus()
        for _ in range(12):
            order.append(page.evaluate(
                "document.activeElement.id || document.activeElement.getAttribute('aria-label')"
                " || document.activeElement.textContent.trim()"
            ))
            page.keyboard.press("Tab")
        # study bar first, then the images' tools and canvases, then the editor
        frontal, lateral = "Frontal (PA) window preset", "Lateral (LATERAL) window preset"
        assert order.index("back-button") < order.index("claim-button") < order.index(frontal)
        assert order.index(frontal) < order.index(lateral)
    finally:
        context.close()


def test_priors_show_the_patients_earlier_study_and_open_it(page, seeded):
    """Last in this file: it adds a study (of the realistic study's patient, dated earlier), which
    the worklist tests above do not expect."""
    from sqlalchemy import select

    from service.core.db import session_scope
    from service.core.models import IndexedInstance
    from tests.helpers.service import make_dicom

    with session_scope(seeded.database_url) as session:
        patient = session.scalars(select(IndexedInstance.patient_id).where(
            IndexedInstance.study_id == seeded.realistic["study_id"])).first()
    prior_file = make_dicom(patient_id=patient, study_date="19990101", view="PA", size=96)
    with seeded.client("uploader") as up:
        uploaded = up.post("/v1/studies", files=[("files", ("prior.dcm", prior_file,
                                                            "application/dicom"))])
        assert uploaded.status_code == 202, uploaded.text
        prior_study = uploaded.json()["study_id"]
    with seeded.client("dr-ada") as ada:
        wait_for(lambda: ada.get(f"/v1/studies/{prior_study}").json()["state"] == "draft_ready",
                 180, interval=0.3, what="the prior's draft")
        prior = ada.get(f"/v1/studies/{prior_study}/report").json()
    sign_in(page, seeded.api_url, "dr-ada")
    page.goto(f"{seeded.api_url}/ui/#/study/{seeded.realistic['report_id']}")
    wait_study_shown(page)
    page.keyboard.press("Alt+r")
    item = page.locator(f'#priors-list li[data-report-id="{prior["report_id"]}"]')
    item.wait_for()
    assert "1999-01-01" in item.inner_text()
    assert prior["text"].split()[0] in item.locator("pre").inner_text()
    assert page.locator("#priors-summary").inner_text().startswith("1 earlier study")
    item.get_by_role("link").click()
    wait_study_shown(page)
    assert page.url.endswith(f"#/study/{prior['report_id']}")
    page.keyboard.press("Alt+r")
    page.get_by_text("No earlier studies of this patient here.").wait_for()
