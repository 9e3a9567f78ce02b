// Loaded by /docs (Swagger UI) after its own script: when the page (same origin) holds the API token in
// sessionStorage, authorize the docs' bearer scheme with it, so "Try it out" works at once.
"use strict";
(function () {
  const token = sessionStorage.getItem("cliplive-token");
  if (!token || typeof ui === "undefined") return;
  let tries = 0;
  (function authorize() {
    const scheme = ui.specSelectors.specJson().getIn(["components", "securitySchemes", "bearer"]);
    if (scheme) ui.preauthorizeApiKey("bearer", token);
    else if (tries++ < 100) setTimeout(authorize, 100); // the schema is still loading
  })();
})();
