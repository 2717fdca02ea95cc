"""Reload a systemd unit when rotator says its credential rotated.
Usage: HOOK_KEY_FILE=/etc/myapp/hook.key python3 systemd_receiver.py myapp.service [PORT]"""
import hashlib
import hmac
import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

KEY = open(os.environ["HOOK_KEY_FILE"], "rb").read().strip()  # the value at the notify signing_key ref
UNIT, PORT = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8088

class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        good = hmac.new(KEY, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(good, self.headers.get("X-Rotator-Signature", "")):
            return self.send_error(401)  # not from rotator: change nothing
        notice = json.loads(body)
        print(f"{notice['credential']} is now version {notice['vault_version']}: reloading {UNIT}", flush=True)
        ok = subprocess.run(["systemctl", "reload", UNIT]).returncode == 0
        self.send_response(204 if ok else 500)  # a 5xx makes rotator retry
        self.end_headers()

HTTPServer(("127.0.0.1", PORT), Hook).serve_forever()
