"""Issue #26: a real browser logs in. Headless Chromium (started as the /watch tests start it: no background
networking, loopback only) fills the login page; with the session cookie the MJPEG <img> shows pictures and the
/watch page's WebRTC <video> plays; after logout both fail (the page is sent back to /login)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sightline.stream.config import RunConfig, StreamConfig
from sightline.stream.metrics import Metrics
from sightline.stream.passwords import hash_password
from sightline.stream.pipeline.pipeline import Pipeline
from sightline.stream.service.app import create_app
from sightline.stream.service.server import HttpServer

from tests.stream.outputs.test_watch import WebDriver, start_driver, wait_for
from tests.support.annotated import grey_clip
from tests.support.models import tiny_classifier
from tests.support.processes import stop_process

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]
PASSWORD = "browser password"

LOGIN = f"""document.getElementById("name").value = "ann";
document.getElementById("password").value = {PASSWORD!r};
document.getElementById("login").requestSubmit();
return true;"""
MJPEG = """const img = new Image();
window.mjpeg = {img, failed: false};
img.onerror = () => { window.mjpeg.failed = true; };
img.src = "/api/streams/cam/mjpeg?t=" + Date.now();
document.body.append(img);
return true;"""
PLAYING = """const w = window.sightlineWatch;
return w ? {mode: w.mode, time: w.video.currentTime, path: location.pathname} : {path: location.pathname};"""


async def test_login_then_video_plays_and_logout_ends_it(tmp_path: Path) -> None:
    clip = grey_clip(tmp_path / "grey.mp4", seconds=2.0)
    config = RunConfig(output_dir=tmp_path / "out", media_root=tmp_path, log_predictions=False,
                       server={"token": "admin-token-0123456789", "port": 0,
                               "users": [{"name": "ann", "password_hash": hash_password(PASSWORD, iterations=1000)}]},
                       annotated_video={"height": 240}, streams=[StreamConfig(name="cam", url=str(clip), loop=True)])
    metrics = Metrics()
    pipeline = Pipeline(tiny_classifier(), config, metrics)
    await asyncio.to_thread(pipeline.start)
    server = HttpServer("127.0.0.1", 0)
    await server.start(create_app(pipeline, config, metrics))
    driver, driver_url = await asyncio.to_thread(start_driver)
    web = None

    async def run(script: str) -> object:
        return await asyncio.to_thread(web.run, script)

    try:
        web = await asyncio.to_thread(WebDriver, driver_url, tmp_path / "profile")
        await asyncio.to_thread(web.open, f"{server.url}/")
        assert await run("return location.pathname") == "/login"  # no session: the page sends the browser to log in
        await run(LOGIN)

        async def on_the_page() -> bool:
            return await run("return location.pathname") == "/" and "ann (viewer)" in str(
                await run("return document.getElementById('who').textContent"))

        await wait_for(on_the_page, 20, "the stream page after login, naming who is logged in")
        assert await run("return document.getElementById('logout').hidden") is False
        assert await run("return [...document.querySelectorAll('.remove')].every((b) => b.hidden)")  # viewer
        await run(MJPEG)

        async def mjpeg_shows() -> bool:
            return bool(await run("return window.mjpeg.img.naturalWidth > 0"))

        await wait_for(mjpeg_shows, 30, "the MJPEG image with the session cookie")
        await asyncio.to_thread(web.open, f"{server.url}/watch?stream=cam")

        async def webrtc_plays() -> dict | None:
            first = await run(PLAYING)
            await asyncio.sleep(0.5)
            second = await run(PLAYING)
            ok = second.get("mode") == "webrtc" and second["time"] > first.get("time", 0) > 0
            return second if ok else None

        await wait_for(webrtc_plays, 40, "the WebRTC video's currentTime advancing")

        await run("fetch('/logout', {method: 'POST'}); return true;")

        async def logged_out() -> bool:
            return await run("return fetch('/api/session').then((r) => r.json()).then((s) => s.role)") is None

        await wait_for(logged_out, 10, "the session ended")
        await run(MJPEG)

        async def mjpeg_fails() -> bool:
            return bool(await run("return window.mjpeg.failed && window.mjpeg.img.naturalWidth === 0"))

        await wait_for(mjpeg_fails, 20, "the MJPEG image refused after logout")
        await asyncio.to_thread(web.open, f"{server.url}/watch?stream=cam")

        async def sent_to_login() -> bool:
            return (await run(PLAYING))["path"] == "/login"

        await wait_for(sent_to_login, 20, "the watch page sending the browser to log in")
        offer = await run("""return fetch('/api/streams/cam/watch', {method: 'POST',
          headers: {'Content-Type': 'application/json'}, body: JSON.stringify({sdp: 'v=0', type: 'offer'})})
          .then((r) => r.status);""")
        assert offer == 401  # no WebRTC signalling without a session
    finally:
        if web is not None:
            await asyncio.to_thread(web.close)
        stop_process(driver)
        await server.stop()
        await asyncio.to_thread(pipeline.shutdown)
