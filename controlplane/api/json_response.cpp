#include "controlplane/api/json_response.h"

#include <string>

#include "dataplane/base/log.h"

namespace portcullis::api {

using nlohmann::json;

http::Response json_response(int status, const json& body) {
  http::Response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

http::Response error_response(int status, std::string_view code, std::string_view message,
                              std::string_view field, int retry_after_s) {
  json body = {{"error", code}, {"message", message}};
  if (!field.empty()) body["field"] = field;
  http::Response r = json_response(status, body);
  if (status == 401) {
    r.headers.emplace_back("WWW-Authenticate",
                           "Bearer realm=\"portcullis\", error=\"" + std::string(code) + "\"");
  }
  if (status == 503 || status == 429) {
    r.headers.emplace_back("Retry-After", std::to_string(retry_after_s));
  }
  return r;
}

http::Response invalid_request(const InputError& e) {
  return error_response(400, "invalid_request", e.message, e.field);
}

http::Response internal_error(std::string_view event, const Error& e) {
  log_error(event, {{"error", e.message()}});
  return error_response(500, "internal_error",
                        "the gateway could not complete the request; try again later");
}

}  // namespace portcullis::api
