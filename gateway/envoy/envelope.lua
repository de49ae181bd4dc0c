-- Molbridge gateway: first HTTP filter of the public listener (inlined by render.py).
--
-- Request side (before jwt_authn):
--   * drops every header a gRPC server could refuse as metadata (names outside [a-z0-9_.-], any
--     `-bin`): HTTP allows `a+b` or `#`, the Python gRPC server answers them with an internal
--     error, REST and native gRPC alike;
--   * replaces an x-request-id that is not 1-64 characters of [A-Za-z0-9._-] (it reaches logs
--     and the audit trail);
--   * drops any client-sent x-molbridge-sub: only jwt_authn may set it (it keys the rate limits);
--   * `authorization: Bearer mbk_…` is an API key, not a JWT: moved to x-api-key so jwt_authn
--     skips it and the service's interceptor verifies it; with an API key, no authorization
--     header reaches the service (one credential per request).
-- Response side: every error (status >= 400) of a REST call leaves as
--   {"error": {"code": "<DOMAIN.md code>", "message": "…", "details": […]}}
-- with the HTTP status of DOMAIN.md, whether it came from a service (transcoded google.rpc.Status,
-- code from ErrorInfo.reason) or from Envoy itself (jwt_authn, local_ratelimit, transcoder,
-- router). Native gRPC calls and successes are never touched.

-- render.py replaces the JSON below with the gateway's tables (statuses, grpc_codes, limits).
local CONFIG_JSON = [==[{}]==]

local META = "molbridge.gateway"
local ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
local RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
local GATEWAY_DOMAIN = "gateway.molbridge"
local DEFAULT_RETRY_AFTER = "60"
-- A service that is down (restarting, failing over, its database away) is back within seconds.
local UNAVAILABLE_RETRY_AFTER = "5"

local CONFIG = json_decode(CONFIG_JSON)

-- Request side -----------------------------------------------------------------------------------
local function starts_with(s, prefix) return s ~= nil and s:sub(1, #prefix) == prefix end

-- gRPC metadata names are lower-case [a-z0-9_.-]. Binary (`-bin`) metadata is dropped whatever
-- its value: no service reads any, and the gRPC server refuses values it cannot base64-decode
-- (which ones is its own business) with an internal error.
local function grpc_metadata_ok(name)
  if name:sub(1, 1) == ":" then return true end -- pseudo-headers (:path, :authority, …)
  return name:find("^[%l%d_.%-]+$") ~= nil and name:sub(-4) ~= "-bin"
end

local SAFE_REQUEST_ID = "^[%w._%-]+$"
-- Each worker has its own Lua state: the address of a fresh table tells them apart in the seed.
math.randomseed(os.time() + math.floor(os.clock() * 1e6) + (tonumber(tostring({}):match("(%x+)$"), 16) or 0) % 1e9)

local function new_request_id()
  local parts = {}
  for k = 1, 4 do parts[k] = string.format("%08x", math.random(0, 0x7fffffff) * 2 + math.random(0, 1)) end
  return table.concat(parts)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local refused = {}
  for name in pairs(headers) do
    if not grpc_metadata_ok(name) then refused[#refused + 1] = name end
  end
  for _, name in ipairs(refused) do headers:remove(name) end
  local request_id = headers:get("x-request-id")
  if request_id and (#request_id > 64 or not request_id:find(SAFE_REQUEST_ID)) then
    headers:replace("x-request-id", new_request_id())
  end
  headers:remove("x-molbridge-sub")
  local auth = headers:get("authorization")
  if auth then
    local key = auth:match("^[Bb][Ee][Aa][Rr][Ee][Rr]%s+(mbk_%S+)%s*$")
    if key then
      headers:remove("x-api-key")
      headers:add("x-api-key", key)
    end
    -- A request with an API key is an API-key request: jwt_authn skips it and its rate-limit
    -- bucket is the key's, so a token beside it must not authenticate it at the service.
    if key or headers:get("x-api-key") then headers:remove("authorization") end
  end
  local path = headers:get(":path") or ""
  local meta = handle:streamInfo():dynamicMetadata()
  meta:set(META, "grpc", starts_with(headers:get("content-type"), "application/grpc"))
  meta:set(META, "method", headers:get(":method") or "")
  meta:set(META, "path", (path:gsub("%?.*$", "")))
end

-- Response side ----------------------------------------------------------------------------------
local function error_info(code, detail, metadata)
  metadata = metadata or {}
  metadata.detail = detail
  return { ["@type"] = ERROR_INFO, reason = code, domain = GATEWAY_DOMAIN, metadata = metadata }
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- A google.rpc.Status as the transcoder prints it: {"code": N, "message": …, "details": […]}.
local function upstream_error(text)
  local ok, status = pcall(json_decode, text)
  if not ok or type(status) ~= "table" or type(status.code) ~= "number" then return nil end
  local code = CONFIG.grpc_codes[tostring(status.code)] or "INTERNAL_ERROR"
  local details = type(status.details) == "table" and array(status.details) or array()
  local retry_after
  for _, d in ipairs(details) do
    if type(d) == "table" and d["@type"] == ERROR_INFO and CONFIG.statuses[d.reason] then code = d.reason end
    if type(d) == "table" and d["@type"] == RETRY_INFO and type(d.retry_delay) == "string" then
      local seconds = tonumber(d.retry_delay:match("^([%d.]+)s$"))
      if seconds then retry_after = tostring(math.max(1, math.ceil(seconds))) end
    end
  end
  local message = type(status.message) == "string" and status.message or ""
  return { code = code, message = message, details = details, retry_after = retry_after }
end

-- Envoy's own replies are short text/plain bodies: classify them by status (and text).
local function gateway_error(status, text, meta)
  local route = (meta.method or "") .. " " .. (meta.path or "")
  if status == 401 or (status == 403 and text:find("Jwt", 1, true)) then
    local detail = "TOKEN_INVALID"
    if text:find("missing", 1, true) then detail = "TOKEN_MISSING" end
    if text:find("expired", 1, true) then detail = "TOKEN_EXPIRED" end
    local message = "Authentication failed: " .. (text ~= "" and text or "invalid credentials")
    if detail == "TOKEN_MISSING" then message = "Authentication required: send a bearer token or an API key" end
    return { code = "AUTHENTICATION_ERROR", status = 401, message = message,
      details = array({ error_info("AUTHENTICATION_ERROR", detail, { reason = text }) }) }
  end
  if status == 403 then
    return { code = "AUTHORIZATION_ERROR", message = text ~= "" and text or "Forbidden",
      details = array({ error_info("AUTHORIZATION_ERROR", "FORBIDDEN") }) }
  end
  if status == 404 then
    return { code = "RESOURCE_NOT_FOUND", message = "No route for " .. route,
      details = array({ error_info("RESOURCE_NOT_FOUND", "ROUTE_NOT_FOUND") }) }
  end
  if status == 413 then
    local limit = CONFIG.max_request_body_bytes
    return { code = "VALIDATION_ERROR", status = 413,
      message = string.format("Request body too large: the gateway accepts at most %d bytes (%.0f MiB)",
        limit, limit / 1048576),
      details = array({ error_info("VALIDATION_ERROR", "PAYLOAD_TOO_LARGE", { limit_bytes = tostring(limit) }) }) }
  end
  if status == 429 then
    return { code = "RATE_LIMITED", message = "Too many requests: rate limit exceeded, retry later",
      details = array({ error_info("RATE_LIMITED", "GATEWAY_RATE_LIMIT") }) }
  end
  if status == 502 or status == 503 then
    -- No healthy instance of the service answered (down, restarting, draining).
    return { code = "SERVICE_UNAVAILABLE", status = 503,
      message = "Service unavailable, try again in a few seconds" .. (text ~= "" and (": " .. text) or ""),
      details = array({ error_info("SERVICE_UNAVAILABLE", "UPSTREAM_UNAVAILABLE") }) }
  end
  if status == 504 then
    return { code = "INTEGRATION_ERROR", status = 504,
      message = "Upstream service did not answer in time" .. (text ~= "" and (": " .. text) or ""),
      details = array({ error_info("INTEGRATION_ERROR", "UPSTREAM_TIMEOUT") }) }
  end
  if status < 500 then
    -- 400 (malformed JSON, bad query parameter), 408, 431, …: the request itself is wrong.
    return { code = "VALIDATION_ERROR", status = status == 400 and 400 or status,
      message = "Invalid request" .. (text ~= "" and (": " .. text) or ""),
      details = array({ error_info("VALIDATION_ERROR", "MALFORMED_REQUEST") }) }
  end
  return { code = "INTERNAL_ERROR", status = 500, message = "Internal error",
    details = array({ error_info("INTERNAL_ERROR", "GATEWAY_ERROR", { reason = text }) }) }
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local status = tonumber(headers:get(":status")) or 0
  if status < 400 or starts_with(headers:get("content-type"), "application/grpc") then return end
  local meta = handle:streamInfo():dynamicMetadata():get(META) or {}
  if meta.grpc then return end

  local content_type = headers:get("content-type") or ""
  local reset = headers:get("x-ratelimit-reset")
  local body = handle:body(true) -- the whole (small) error body
  local text = trim(body:getBytes(0, body:length()))

  local err = content_type:find("json", 1, true) and upstream_error(text) or nil
  if err == nil then err = gateway_error(status, text, meta) end
  local new_status = err.status or CONFIG.statuses[err.code] or 500
  if err.message == "" then err.message = err.code end

  body:setBytes(json_encode({ error = { code = err.code, message = err.message, details = err.details } }))
  headers = handle:headers() -- the handle taken before body() is no longer valid
  headers:replace(":status", tostring(new_status))
  headers:replace("content-type", "application/json")
  if new_status == 429 then
    local retry_after = err.retry_after
    if retry_after == nil and tonumber(reset) then retry_after = tostring(math.max(1, tonumber(reset))) end
    headers:replace("retry-after", retry_after or DEFAULT_RETRY_AFTER)
  elseif new_status == 503 then
    headers:replace("retry-after", err.retry_after or UNAVAILABLE_RETRY_AFTER)
  end
end
