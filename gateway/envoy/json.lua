-- Molbridge gateway: a small JSON reader/writer for the Lua filters (Envoy's LuaJIT ships none).
-- render.py puts this file in front of envelope.lua and contract.lua: both see its locals.

local json_null = setmetatable({}, { __tostring = function() return "null" end })
local array_mt = {}

local function array(t) return setmetatable(t or {}, array_mt) end

local function skip_ws(s, i) return string.find(s, "[^ \t\r\n]", i) or #s + 1 end

local unescape = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40) end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
    0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local function decode_string(s, i)
  local out, j = {}, i + 1
  while true do
    local c = s:sub(j, j)
    if c == "" then error("unterminated string") end
    if c == '"' then return table.concat(out), j + 1 end
    if c == "\\" then
      local e = s:sub(j + 1, j + 1)
      if e == "u" then
        local cp = tonumber(s:sub(j + 2, j + 5), 16)
        if not cp then error("bad \\u escape") end
        j = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF and s:sub(j, j + 1) == "\\u" then
          local lo = tonumber(s:sub(j + 2, j + 5), 16)
          if lo and lo >= 0xDC00 and lo <= 0xDFFF then
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
            j = j + 6
          end
        end
        out[#out + 1] = utf8_char(cp)
      else
        local r = unescape[e]
        if not r then error("bad escape") end
        out[#out + 1] = r
        j = j + 2
      end
    else
      local k = string.find(s, '["\\]', j) or #s + 1
      out[#out + 1] = s:sub(j, k - 1)
      j = k
    end
  end
end

local decode_value

local function decode_object(s, i)
  local obj = {}
  i = skip_ws(s, i + 1)
  if s:sub(i, i) == "}" then return obj, i + 1 end
  while true do
    if s:sub(i, i) ~= '"' then error("expected a key") end
    local key, value
    key, i = decode_string(s, i)
    i = skip_ws(s, i)
    if s:sub(i, i) ~= ":" then error("expected ':'") end
    value, i = decode_value(s, i + 1)
    obj[key] = value
    i = skip_ws(s, i)
    local c = s:sub(i, i)
    if c == "}" then return obj, i + 1 end
    if c ~= "," then error("expected ',' or '}'") end
    i = skip_ws(s, i + 1)
  end
end

local function decode_array(s, i)
  local arr = array()
  i = skip_ws(s, i + 1)
  if s:sub(i, i) == "]" then return arr, i + 1 end
  while true do
    local value
    value, i = decode_value(s, i)
    arr[#arr + 1] = value
    i = skip_ws(s, i)
    local c = s:sub(i, i)
    if c == "]" then return arr, i + 1 end
    if c ~= "," then error("expected ',' or ']'") end
    i = i + 1
  end
end

decode_value = function(s, i)
  i = skip_ws(s, i)
  local c = s:sub(i, i)
  if c == "{" then return decode_object(s, i) end
  if c == "[" then return decode_array(s, i) end
  if c == '"' then return decode_string(s, i) end
  if s:sub(i, i + 3) == "true" then return true, i + 4 end
  if s:sub(i, i + 4) == "false" then return false, i + 5 end
  if s:sub(i, i + 3) == "null" then return json_null, i + 4 end
  local num = string.match(s, "^-?%d+%.?%d*[eE]?[-+]?%d*", i)
  if not num then error("unexpected character") end
  return tonumber(num), i + #num
end

local function json_decode(s)
  local value, i = decode_value(s, 1)
  if skip_ws(s, i) <= #s then error("trailing characters") end
  return value
end

local escape = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
  ["\t"] = "\\t" }

-- Error bodies are JSON, so valid UTF-8: an invalid byte (echoed from a request, or a lone
-- surrogate from a \u escape) becomes U+FFFD.
local REPLACEMENT = "\239\191\189"

local function utf8_length(s, i)
  local c = s:byte(i)
  if c < 0x80 then return 1 end
  local len = (c >= 0xC2 and c <= 0xDF and 2) or (c >= 0xE0 and c <= 0xEF and 3) or (c >= 0xF0 and c <= 0xF4 and 4)
  if not len or i + len - 1 > #s then return nil end
  for k = i + 1, i + len - 1 do
    local b = s:byte(k)
    if b < 0x80 or b > 0xBF then return nil end
  end
  local b2 = s:byte(i + 1)
  -- overlong forms, UTF-16 surrogates, code points above U+10FFFF
  if (c == 0xE0 and b2 < 0xA0) or (c == 0xED and b2 > 0x9F) or (c == 0xF0 and b2 < 0x90) or (c == 0xF4 and b2 > 0x8F) then
    return nil
  end
  return len
end

local function utf8_clean(s)
  if not s:find("[\128-\255]") then return s end
  local out, i = {}, 1
  while i <= #s do
    local len = utf8_length(s, i)
    out[#out + 1] = len and s:sub(i, i + len - 1) or REPLACEMENT
    i = i + (len or 1)
  end
  return table.concat(out)
end

local function json_encode(v)
  if v == nil or v == json_null then return "null" end
  local t = type(v)
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  if t == "string" then
    return '"' .. utf8_clean(v):gsub('[%c"\\]', function(c) return escape[c] or string.format("\\u%04x", c:byte()) end) .. '"'
  end
  local parts = {}
  if getmetatable(v) == array_mt then
    for _, item in ipairs(v) do parts[#parts + 1] = json_encode(item) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = json_encode(k) .. ":" .. json_encode(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end
