// The npm `onvif` library (what UniFi Protect parses ONVIF with) against the appliance: reads
// {"hostname", "port", "username", "password"} as JSON on stdin, connects as the library does
// (clock, capabilities or services, video sources, profiles), then asks for the device's information,
// the stream URI and the snapshot URI, and prints what it got as one line of JSON.
"use strict";

const { Cam } = require("onvif");

const given = JSON.parse(require("fs").readFileSync(0, "utf8"));

function fail(stage, err) {
  console.log(JSON.stringify({ error: stage + ": " + (err && err.message ? err.message : String(err)) }));
  process.exit(1);
}

new Cam({ hostname: given.hostname, port: given.port, username: given.username, password: given.password,
          timeout: 10000 }, function connected(err) {
  if (err) fail("connect", err);
  const cam = this;
  cam.getDeviceInformation((infoErr, info) => {
    if (infoErr) fail("GetDeviceInformation", infoErr);
    cam.getStreamUri({ protocol: "RTSP" }, (streamErr, stream) => {
      if (streamErr) fail("GetStreamUri", streamErr);
      cam.getSnapshotUri({}, (snapshotErr, snapshot) => {
        if (snapshotErr) fail("GetSnapshotUri", snapshotErr);
        const profiles = cam.profiles.map((profile) => ({
          token: profile.$.token, encoding: profile.videoEncoderConfiguration.encoding,
          width: profile.videoEncoderConfiguration.resolution.width,
          height: profile.videoEncoderConfiguration.resolution.height,
          fps: profile.videoEncoderConfiguration.rateControl.frameRateLimit,
          bitrate: profile.videoEncoderConfiguration.rateControl.bitrateLimit }));
        console.log(JSON.stringify({ info, profiles, stream: stream.uri, snapshot: snapshot.uri }));
      });
    });
  });
});
