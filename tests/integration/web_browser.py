#!/usr/bin/python3
"""Issue 22, acceptance 1 and 4: a headless chromium (Debian's chromium + chromium-driver,
driven by python3-selenium) against a running gateway whose simulator serves dev0..dev2.
Run by tests/integration/test_web.cpp (Web.BrowserSeesDevicesValuesAndActs), which starts
mosquitto, the simulators and the gateway and passes their ports. Exits 0 when every check
passed; prints what it saw.

Checks: every device and its online state; a value changing without a reload; a rename
(and its MQTT topics following); a command that changes the actuator (checked with a CoAP
GET) and one the allow-list refuses (an error shown); a device going offline when its
simulator stops. Screenshots of each page go to --shots.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

p = argparse.ArgumentParser()
p.add_argument("--url", required=True)
p.add_argument("--mqtt-port", required=True)
p.add_argument("--coap-port", type=int, required=True)
p.add_argument("--stop-pid", type=int, required=True)
p.add_argument("--shots", required=True)
args = p.parse_args()

opts = webdriver.ChromeOptions()
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--window-size=1280,1050", "--hide-scrollbars", "--force-device-scale-factor=1"):
    opts.add_argument(a)
opts.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
started = time.time()


def log(msg):
    print(f"[{time.time() - started:5.1f}s] {msg}", flush=True)


def wait(cond, what, timeout=20):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: cond())
    except Exception:
        driver.save_screenshot(os.path.join(args.shots, "failed.png"))
        log("FAILED waiting for: " + what)
        log(driver.find_element(By.TAG_NAME, "main").text[:2000])
        sys.exit(1)


def find(css):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def text(css):
    e = find(css)
    try:
        return e.text if e else None
    except Exception:  # replaced while read
        return None


def shot(name):
    time.sleep(0.3)  # let the last repaint land; the checks before it waited on conditions
    shown = driver.find_element(By.TAG_NAME, "main").text
    bad = [l for l in shown.splitlines() if l.strip() in ("null", "undefined", "NaN") or "undefined" in l]
    assert not bad, f"page {name} shows {bad}"
    driver.save_screenshot(os.path.join(args.shots, f"web-{name}.png"))
    log(f"screenshot web-{name}.png")


def coap_get(port, path):
    out = subprocess.run(["coap-client-openssl", "-m", "get", "-B", "5",
                          f"coap://127.0.0.1:{port}{path}"], capture_output=True, text=True)
    return out.stdout.strip()


try:
    # 1. Devices: every device, online.
    driver.get(args.url + "/#/devices")
    for name in ("dev0", "dev1", "dev2", "node"):
        wait(lambda: text(f'#devices tr[data-device="{name}"] .state') == "online", f"{name} online")
    log("devices page: dev0, dev1, dev2, node online")
    shot("devices")

    # 2. A device: a value changes without a reload.
    driver.get(args.url + "/#/device/dev0")
    cell = '#resources tr[data-path="/sensors/counter"] .value'
    wait(lambda: (text(cell) or "—") != "—", "a first counter value")
    first = text(cell)
    marker = driver.execute_script("window.__noReload = 1; return window.__noReload;")
    wait(lambda: text(cell) not in (None, first), "the counter to change")
    assert driver.execute_script("return window.__noReload;") == marker, "the page reloaded"
    log(f"device page: counter went {first} -> {text(cell)} without a reload")

    # Read now: a CoAP GET through the admin API's device/read (a GET [[command]] allows it).
    find('#resources tr[data-path="/sensors/temp"] button.read').click()
    wait(lambda: "2.05" in (text('#resources tr[data-path="/sensors/temp"] .result') or ""),
         "the read's answer")
    log("read now /sensors/temp: " + text('#resources tr[data-path="/sensors/temp"] .result'))

    # 3. A command the allow-list allows: the simulator's LED changes.
    Select(find("#cmd-path")).select_by_value("/actuators/led")
    find("#cmd-payload").send_keys("on")
    find("#cmd-send").click()
    wait(lambda: "2.04" in (text("#cmd-result") or ""), "the command's result 2.04")
    assert "ok" in find("#cmd-result").get_attribute("class"), find("#cmd-result").get_attribute("class")
    led = coap_get(args.coap_port, "/actuators/led")
    assert led == "on", f"CoAP GET /actuators/led says {led!r}"
    log("command PUT /actuators/led on: result 2.04 shown, CoAP GET says 'on'")
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    shot("device")

    # 4. One it refuses: an error shown, nothing sent (the gtest checks the simulator's log).
    Select(find("#cmd-path")).select_by_value("/config/name")
    find("#cmd-payload").clear()
    find("#cmd-payload").send_keys("evil")
    find("#cmd-send").click()
    wait(lambda: "not_allowed" in (text("#cmd-result") or ""), "the refusal")
    assert "error" in find("#cmd-result").get_attribute("class")
    name_now = coap_get(args.coap_port, "/config/name")
    assert name_now != "evil", name_now
    refusal = [l for l in text("#cmd-result").splitlines() if '"error"' in l]
    log("command PUT /config/name refused, shown: " + (refusal[0].strip() if refusal else "?"))

    # 5. Rename node (it registered itself in the RD) -> hallway; its MQTT topics follow.
    sub = subprocess.Popen(["mosquitto_sub", "-p", args.mqtt_port, "-t", "c2m/hallway/sensors/#",
                            "-C", "1", "-W", "20", "-v"], stdout=subprocess.PIPE, text=True)
    driver.get(args.url + "/#/device/node")
    wait(lambda: find("#rename-to") is not None and text("#device-name") == "node", "node's page")
    box = find("#rename-to")
    box.clear()
    box.send_keys("hallway")
    find("#rename-btn").click()
    wait(lambda: text("#device-name") == "hallway", "the page to show the new name")
    out, _ = sub.communicate(timeout=25)
    assert out.startswith("c2m/hallway/sensors/"), f"MQTT after the rename: {out!r}"
    log("renamed node -> hallway; MQTT: " + out.split()[0])

    # 6. Rules, health (with a few seconds of chart), discovery.
    driver.get(args.url + "/#/rules")
    wait(lambda: "sensors" in (driver.find_element(By.TAG_NAME, "main").text), "the rules page")
    shot("rules")
    driver.get(args.url + "/#/health")
    wait(lambda: text("#h-broker") == "connected", "the health page")
    wait(lambda: driver.execute_script("return state.rate.filter(r => r.published > 0).length") >= 3,
         "three seconds of rate samples")
    shot("health")
    driver.get(args.url + "/#/discovery")
    wait(lambda: find("#discover-btn") is not None, "the discovery page")
    find("#discover-btn").click()
    wait(lambda: (text("#discovery-result") or "") not in ("",) and "asking" not in text("#discovery-result"),
         "the discovery answer")
    log("discovery: " + text("#discovery-result"))
    shot("discovery")

    # 7. dev2 goes offline when its simulator stops: seen on the devices page, live.
    driver.get(args.url + "/#/devices")
    wait(lambda: text('#devices tr[data-device="dev2"] .state') == "online", "dev2 online")
    driver.execute_script("window.__noReload = 2;")
    os.kill(args.stop_pid, signal.SIGTERM)
    wait(lambda: text('#devices tr[data-device="dev2"] .state') == "offline", "dev2 offline", 45)
    assert driver.execute_script("return window.__noReload;") == 2, "the page reloaded"
    log("dev2 went offline on the devices page without a reload")
    print("ALL BROWSER CHECKS PASSED")
finally:
    driver.quit()
