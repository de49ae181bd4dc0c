-- Molbridge gateway: the REST contract the transcoder does not enforce (inlined by render.py after
-- json.lua; its filter runs after jwt_authn, local_ratelimit and buffer, just before the transcoder).
--
-- Request side: a JSON body field the method does not define is refused with 400 VALIDATION_ERROR
-- naming it (the transcoder would drop it silently, envoyproxy/envoy#46623), at every depth of the
-- message. The answer is a google.rpc.Status like a service's, so envelope.lua wraps it the same way.
-- A body that is not JSON goes on untouched: the transcoder answers it (MALFORMED_REQUEST).
-- Streaming uploads (google.api.HttpBody) are never read here.
-- Response side: a success of a route that creates a resource answers 201 instead of 200.
--
-- CONFIG (rendered from the descriptor set by gateway/envoy/contract.py):
--   routes:   [{verb, pattern (Lua, anchored), body = message name or "", list = body is an array
--             of that message, created}] in the transcoder's order of preference (literal first);
--   messages: {full name = {field name (proto and JSON spelling) = nested message name or ""}}.
local CONFIG_JSON = [==[{}]==]

local META = "molbridge.gateway"
local NOT_CREATED = "x-molbridge-not-created" -- set by a service (gRPC initial metadata) on a repeated create
local ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
local BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
local INVALID_ARGUMENT = 3
local MAX_REPORTED = 20

local CONFIG = json_decode(CONFIG_JSON)

local function route_of(verb, path)
  for _, route in ipairs(CONFIG.routes) do
    if route.verb == verb and path:find(route.pattern) then return route end
  end
  return nil
end

-- Appends to `unknown` the dotted path of every key of `value` (a decoded JSON object of message
-- `name`) that the message does not define, descending into nested messages, lists and maps.
local check_message

local function check_value(value, name, is_map, prefix, unknown)
  if type(value) ~= "table" or value == json_null or name == "" then return end
  if getmetatable(value) == array_mt then
    for i, item in ipairs(value) do check_message(item, name, prefix .. "[" .. (i - 1) .. "]", unknown) end
  elseif is_map then
    for key, item in pairs(value) do check_message(item, name, prefix .. "." .. tostring(key), unknown) end
  else
    check_message(value, name, prefix, unknown)
  end
end

check_message = function(object, name, prefix, unknown)
  local fields = CONFIG.messages[name]
  if fields == nil or type(object) ~= "table" or object == json_null or getmetatable(object) == array_mt then
    return
  end
  for key, value in pairs(object) do
    local path = prefix == "" and key or (prefix .. "." .. key)
    local field = fields[key]
    if field == nil then
      unknown[#unknown + 1] = path
    else
      check_value(value, field.m or "", field.map, path, unknown)
    end
  end
end

local function refuse(handle, unknown, name)
  table.sort(unknown)
  local shown = {}
  for i = 1, math.min(#unknown, MAX_REPORTED) do shown[i] = unknown[i] end
  local listed = table.concat(shown, ", ") .. (#unknown > MAX_REPORTED and ", …" or "")
  local violations = array()
  for _, path in ipairs(shown) do
    violations[#violations + 1] = { field = path, description = "not a field of this request" }
  end
  local status = {
    code = INVALID_ARGUMENT,
    message = "Unknown field" .. (#unknown > 1 and "s" or "") .. " in the request body: " .. listed,
    details = array({
      { ["@type"] = ERROR_INFO, reason = "VALIDATION_ERROR", domain = "gateway.molbridge",
        metadata = { detail = "UNKNOWN_FIELD", fields = listed, message = name } },
      { ["@type"] = BAD_REQUEST, field_violations = violations },
    }),
  }
  handle:respond({ [":status"] = "400", ["content-type"] = "application/json" }, json_encode(status))
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  if content_type:sub(1, 16) == "application/grpc" then return end
  local verb = (headers:get(":method") or ""):lower()
  local route = route_of(verb, ((headers:get(":path") or ""):gsub("%?.*$", "")))
  if route == nil then return end
  if route.created then handle:streamInfo():dynamicMetadata():set(META, "created", true) end
  if route.body == "" then return end -- no JSON body (or a streaming upload): nothing to read

  local body = handle:body(true)
  if body == nil or body:length() == 0 then return end
  local ok, value = pcall(json_decode, body:getBytes(0, body:length()))
  if not ok then return end -- malformed: the transcoder answers it
  local unknown = {}
  if route.list then
    check_value(value, route.body, false, "", unknown)
  else
    check_message(value, route.body, "", unknown)
  end
  if #unknown > 0 then refuse(handle, unknown, route.body) end
end

function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata():get(META)
  if meta == nil or not meta.created then return end
  local headers = handle:headers()
  -- A create that found its resource already there (an idempotent repeat) says so: it stays 200.
  if headers:get(NOT_CREATED) ~= nil then
    headers:remove(NOT_CREATED)
    return
  end
  if headers:get(":status") == "200" then headers:replace(":status", "201") end
end
