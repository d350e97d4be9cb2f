"""The registration UI in a real browser: Debian's headless Chromium, driven by Selenium through Debian's
chromedriver, over the lab's HTTPS edge, trusting the lab's CA the way a person would (the CA imported
into the browser's own NSS database, no certificate error ignored).

The three steps of the flow (request an OTP by e-mail, verify it, register) with a screenshot of each,
a session id planted in the browser before the OTP request that is worth nothing afterwards, and forms
posted without their CSRF token refused. Screenshots go to a temporary directory, or with
UPDATE_SCREENSHOTS=1 to docs/ for the README (as UPDATE_GOLDEN=1 does for the golden files), so that a
test run leaves the working tree as it was.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from registration.ui.sessions import SESSION_COOKIE, new_session_id
from tests.lab.conftest import ROOT, Lab
from tests.lab.test_registration import csrf, eligible, fresh_email, mails, otp_from, sql, ui_request_and_verify

# The browser's own steps only (func_only): this module runs first, so its first test's setup is the
# session's lab (lab-up, bootstrap, deploy-stack, each bounded by fab's own timeout), which took more
# than 420 s on a machine loaded by a rehearsal beside it (CI run 29: every test then errored).
pytestmark = [pytest.mark.lab, pytest.mark.timeout(420, func_only=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CERTUTIL = "/usr/bin/certutil"
WAIT = 45  # seconds for a page to show what a step expects (above the UI's own API budget)
SCREENSHOTS = ("ui-1-request-otp.png", "ui-2-verify-otp.png", "ui-3-register.png")


def browser_home(base: Path, ca: Path | None) -> Path:
    """A HOME for Chromium whose NSS database (~/.pki/nssdb, where Chromium on Linux keeps the
    authorities a user added) trusts the lab's CA, or nothing at all with ca=None."""
    nssdb = base / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run([CERTUTIL, "-N", "-d", f"sql:{nssdb}", "--empty-password"], check=True, timeout=30)
    if ca is not None:
        add = [CERTUTIL, "-A", "-d", f"sql:{nssdb}", "-n", "swarmlab lab CA", "-t", "C,,", "-i", str(ca)]
        subprocess.run(add, check=True, timeout=30)
        listed = subprocess.run([CERTUTIL, "-L", "-d", f"sql:{nssdb}"], check=True, timeout=30, capture_output=True)
        assert b"swarmlab lab CA" in listed.stdout
    return base


def chromium(home: Path) -> WebDriver:
    for tool in (CHROMIUM, CHROMEDRIVER, CERTUTIL):
        if not Path(tool).exists():
            pytest.fail(
                f"{tool} is missing: `make lab-tools` installs it (Debian: chromium chromium-driver libnss3-tools)"
            )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--window-size=900,640",
        f"--user-data-dir={home / 'profile'}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(argument)
    # Debian's chromedriver, given by path, so that Selenium Manager never looks for (or downloads) one.
    service = Service(executable_path=CHROMEDRIVER, env={**os.environ, "HOME": str(home)})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


@pytest.fixture()
def browser(lab: Lab, tmp_path: Path) -> Iterator[WebDriver]:
    driver = chromium(browser_home(tmp_path / "home", lab.state.ca_cert))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        return ROOT / "docs"
    return tmp_path_factory.mktemp("screenshots")


def shown(driver: WebDriver, by: str, what: str) -> None:
    WebDriverWait(driver, WAIT).until(expected_conditions.visibility_of_element_located((by, what)))


def on_page(driver: WebDriver, path: str, element_id: str) -> None:
    try:
        WebDriverWait(driver, WAIT).until(lambda d: d.current_url.split("?")[0].endswith(path))
        shown(driver, By.ID, element_id)
    except TimeoutException:
        # Say what the browser shows instead (an error page of the UI, a proxy's 50x...), not just "timeout".
        text = driver.find_element(By.TAG_NAME, "body").text[-600:]
        pytest.fail(f"after {WAIT} s the browser is on {driver.current_url}, not {path}#{element_id}; it shows: {text}")


def submit(driver: WebDriver) -> None:
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def session_id(driver: WebDriver) -> str:
    cookie = driver.get_cookie(SESSION_COOKIE)
    assert cookie is not None, "the UI set no session cookie"
    assert cookie["secure"] and cookie["httpOnly"], cookie
    return str(cookie["value"])


def snap(driver: WebDriver, directory: Path, name: str) -> None:
    path = directory / name
    assert driver.save_screenshot(str(path)), f"no screenshot {path}"
    assert path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {path}")


def test_the_edge_certificate_verifies_against_the_lab_ca_only(lab: Lab, tmp_path: Path) -> None:
    """What makes the browser's trust real: Python verifies the edge against the lab's CA, and a Chromium
    that has not imported it refuses the page (the flow's browser below has no way around a bad certificate)."""
    with httpx.Client(verify=lab.tls, timeout=10) as client:
        assert client.get(lab.url + "/healthz").status_code == 200
    driver = chromium(browser_home(tmp_path / "untrusting", ca=None))
    try:
        driver.get(lab.url + "/")
        source = driver.page_source
        assert "ERR_CERT_AUTHORITY_INVALID" in source or "Privacy error" in driver.title, driver.title
        assert driver.find_elements(By.ID, "email") == [], "an untrusted certificate must not show the UI"
    finally:
        driver.quit()


def test_the_three_steps_in_a_browser_over_https(
    lab: Lab, api: httpx.Client, browser: WebDriver, screenshots: Path
) -> None:
    email = fresh_email()
    eligible(api, email)
    browser.get(lab.url + "/")
    assert browser.current_url.startswith("https://"), "the UI is served over HTTPS"
    on_page(browser, "/", "email")
    assert "Step 1 of 3" in browser.page_source
    browser.find_element(By.ID, "email").send_keys(email)
    snap(browser, screenshots, SCREENSHOTS[0])
    submit(browser)

    on_page(browser, "/authen", "otp")
    assert email in browser.find_element(By.TAG_NAME, "strong").text
    code = otp_from(mails(lab, email)[-1])
    browser.find_element(By.ID, "otp").send_keys(code)
    snap(browser, screenshots, SCREENSHOTS[1])
    submit(browser)

    on_page(browser, "/reg", "firstname")
    browser.find_element(By.ID, "firstname").send_keys("Katherine")
    browser.find_element(By.ID, "lastname").send_keys("Johnson")
    snap(browser, screenshots, SCREENSHOTS[2])
    submit(browser)

    shown(browser, By.ID, "message")
    message = browser.find_element(By.ID, "message").text
    assert message.startswith("Registration complete. Your student ID is "), message
    student_id = message.removeprefix("Registration complete. Your student ID is ").split(".")[0]
    assert student_id.isdigit(), message
    assert browser.find_elements(By.CSS_SELECTOR, "p.error") == []
    assert browser.get_cookie(SESSION_COOKIE) is None, "the session ends with the registration"
    assert sql(lab, f"SELECT id FROM student WHERE email = '{email}'") == student_id
    assert student_id in mails(lab, email, count=2)[-1]["body"]


def test_a_session_id_planted_before_the_otp_request_is_worth_nothing(
    lab: Lab, api: httpx.Client, browser: WebDriver
) -> None:
    email, attackers = fresh_email(), fresh_email()
    eligible(api, email, attackers)
    with httpx.Client(base_url=lab.url, verify=lab.tls, timeout=30, follow_redirects=False) as client:

        def with_session(path: str, sid: str) -> httpx.Response:
            client.cookies.clear()
            return client.get(path, headers={"cookie": f"{SESSION_COOKIE}={sid}"})

        # An id the attacker made up is never adopted: the first page answers with an id of its own.
        made_up = new_session_id()
        first = with_session("/", made_up)
        assert first.status_code == 200 and first.cookies[SESSION_COOKIE] != made_up
        # A real session of the attacker's own (stored once it requested an OTP, for an address of its
        # own), planted in the victim's browser before the victim's OTP request.
        client.cookies.clear()
        cookie = {"cookie": f"{SESSION_COOKIE}={first.cookies[SESSION_COOKIE]}"}
        own = client.post("/", data={"email": attackers, "csrf": csrf(first)}, headers=cookie)
        assert own.status_code == 303, own.text[:300]
        planted = own.cookies[SESSION_COOKIE]
        browser.get(lab.url + "/healthz")  # on the site (a page that sets no cookie), to plant it there
        browser.add_cookie({"name": SESSION_COOKIE, "value": planted, "path": "/", "secure": True, "httpOnly": True})
        browser.get(lab.url + "/")
        on_page(browser, "/", "email")
        assert session_id(browser) == planted, "the planted session is the one the victim starts from"

        field = browser.find_element(By.ID, "email")
        field.clear()  # the planted session shows the attacker's address: the victim types over it
        field.send_keys(email)
        submit(browser)
        on_page(browser, "/authen", "otp")
        after_request = session_id(browser)
        browser.find_element(By.ID, "otp").send_keys(otp_from(mails(lab, email)[-1]))
        submit(browser)
        on_page(browser, "/reg", "firstname")
        after_authentication = session_id(browser)
        assert len({planted, after_request, after_authentication}) == 3, "the id changes at each step"

        # The attacker's id reaches neither the registration form nor the OTP step: it is gone.
        stolen = with_session("/reg", planted)
        assert stolen.status_code == 403 and stolen.headers["x-error-code"] == "not_authenticated"
        assert 'name="firstname"' not in stolen.text
        back = with_session("/authen", planted)
        assert back.status_code == 303 and back.headers["location"] == "./"
        # The id the victim held between the two steps is as dead; only the current one may register.
        assert with_session("/reg", after_request).status_code == 403
    browser.find_element(By.ID, "firstname").send_keys("Mary")
    browser.find_element(By.ID, "lastname").send_keys("Jackson")
    submit(browser)
    shown(browser, By.ID, "message")
    assert browser.find_element(By.ID, "message").text.startswith("Registration complete.")


def test_forms_posted_without_their_csrf_token_are_refused(lab: Lab, api: httpx.Client) -> None:
    email = fresh_email()
    eligible(api, email)
    with httpx.Client(base_url=lab.url, verify=lab.tls, timeout=30, follow_redirects=True) as client:
        page = client.get("/")
        assert page.status_code == 200
        token = csrf(page)
        for fields in ({"email": email}, {"email": email, "csrf": ""}, {"email": email, "csrf": token[::-1]}):
            refused = client.post("/", data=fields)
            assert refused.status_code == 400 and refused.headers["x-error-code"] == "invalid_request", fields
            assert 'name="otp"' not in refused.text
        # Another session's token is no better: tokens belong to their session.
        with httpx.Client(base_url=lab.url, verify=lab.tls, timeout=30) as other:
            foreign = csrf(other.get("/"))
        assert client.post("/", data={"email": email, "csrf": foreign}).status_code == 400
        time.sleep(2)
        assert httpx.get(lab.url + "/mail/messages", params={"to": email}, verify=lab.tls).json() == [], (
            "a refused form must not reach the API"
        )
    # Past the OTP, in an authenticated session: the registration form without its token registers nobody.
    with httpx.Client(base_url=lab.url, verify=lab.tls, timeout=30, follow_redirects=True) as client:
        ui_request_and_verify(lab, client, email)
        form = client.get("/reg")
        assert form.status_code == 200
        for data in ({"firstname": "No", "lastname": "Token"}, {"firstname": "No", "lastname": "Token", "csrf": "x"}):
            refused = client.post("/reg", data=data)
            assert refused.status_code == 400 and refused.headers["x-error-code"] == "invalid_request"
        assert sql(lab, f"SELECT count(*) FROM student WHERE email = '{email}'") == "0"
        done = client.post("/reg", data={"firstname": "With", "lastname": "Token", "csrf": csrf(form)})
        assert done.status_code == 200 and "Registration complete" in done.text
    assert sql(lab, f"SELECT count(*) FROM student WHERE email = '{email}'") == "1"


def test_screenshot_names_match_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in SCREENSHOTS:
        assert f"(docs/{name})" in readme and (ROOT / "docs" / name).is_file(), name
