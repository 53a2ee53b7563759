// The API's page: Swagger UI (npm's swagger-ui-dist, served by the app) over /api/openapi.json.
// "Authorize" takes the function key (x-functions-key) for "Try it out"; nothing is stored.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", location.href).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
  });
});
