#pragma once
// JSON answers shared by the agent and operator APIs:
//   {"error": "<code>", "message": "<what went wrong and what to do>", "field": "<name>"}
// 401 answers carry WWW-Authenticate (Bearer), 429 and 503 answers Retry-After.

#include <string_view>

#include <nlohmann/json.hpp>

#include "controlplane/api/json_input.h"
#include "controlplane/http/https_server.h"
#include "dataplane/base/result.h"

namespace portcullis::api {

http::Response json_response(int status, const nlohmann::json& body);

// `retry_after_s` is used for 429 and 503 only.
http::Response error_response(int status, std::string_view code, std::string_view message,
                              std::string_view field = {}, int retry_after_s = 1);

// 400 invalid_request naming the field.
http::Response invalid_request(const InputError& e);

// A store or kernel failure: logged with its context under `event`, answered 500 without it.
http::Response internal_error(std::string_view event, const Error& e);

}  // namespace portcullis::api
