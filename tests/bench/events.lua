-- tests/bench/events.lua — the wrk script of `make bench` (tests/bench/run.sh).
--
-- Every request is an ingest of API.md's example body (purchase_completed from
-- brand.pos, identity externalUserId + email) for one of BENCH_USERS known users.
-- Settings come from the environment:
--
--   BENCH_KEY         API key (events:write)                          required
--   BENCH_MODE        single  one new event per request (POST /v1/cdp/events)
--                     batch   BENCH_ITEMS new events per request (/batch)
--                     seed    the events PREFIX-0 .. PREFIX-(COUNT-1), in batches
--                             of BENCH_ITEMS, each sent once; a thread stops after
--                             its share (see BENCH_MARK_DIR); one connection
--                             per thread (wrk -tN -cN)
--                     replay  events PREFIX-k, k random in [0, COUNT): the same
--                             bodies as seed, so each is a duplicate once seeded
--   BENCH_NONCE       makes new external ids unique: NONCE-THREAD-COUNTER
--   BENCH_USERS       number of known users (default 1000); user i is
--                     externalUserId bench-u-%04d, email bench-u-%04d@example.com
--   BENCH_ITEMS       events per batch request (default 1000)
--   BENCH_SORTED=1    batch: the items of a request in ascending user order, so
--                     that concurrent batches lock the profiles in one order
--   BENCH_PREFIX, BENCH_COUNT   the fixed key set of seed and replay
--   BENCH_QUOTA       single mode: a thread stops after this many responses
--   BENCH_MARK_DIR    where a thread that stopped by itself (seed, quota) writes
--                     the file done-THREAD; run.sh ends wrk when all are there
--
-- done() prints one line for run.sh:
--   RESULT requests=N duration_us=N p50_us=N p99_us=N items=N accepted=N
--          duplicate=N item_errors=N http_errors=N socket_errors=N
-- where accepted/duplicate/item_errors count events (batch results one by one).

local key      = os.getenv("BENCH_KEY") or error("BENCH_KEY is not set")
local mode     = os.getenv("BENCH_MODE") or "single"
local nonce    = os.getenv("BENCH_NONCE") or tostring(os.time())
local users    = tonumber(os.getenv("BENCH_USERS") or "1000")
local items    = tonumber(os.getenv("BENCH_ITEMS") or "1000")
local prefix   = os.getenv("BENCH_PREFIX") or "dup"
local count    = tonumber(os.getenv("BENCH_COUNT") or "10000")
local quota    = tonumber(os.getenv("BENCH_QUOTA") or "0")
local markdir  = os.getenv("BENCH_MARK_DIR")
local sorted   = os.getenv("BENCH_SORTED") == "1"

local OCCURRED = "2025-05-20T12:45:00Z"

local headers = {
   ["Authorization"] = "Bearer " .. key,
   ["Content-Type"]  = "application/json",
}

-- ---------------------------------------------------------------- setup, main thread

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

-- ---------------------------------------------------------------- per thread

-- One event as JSON text: external id ext, user u, amount in cents.
local function event(ext, u, cents)
   local user = string.format("bench-u-%04d", u)
   return string.format(
      '{"source":"brand.pos","externalEventId":"%s","eventType":"purchase_completed",' ..
      '"occurredAt":"%s","identity":{"externalUserId":"%s","email":"%s@example.com"},' ..
      '"properties":{"order_id":"order_%s","amount":%d.%02d,"currency":"USD",' ..
      '"store_id":"store_%d"}}',
      ext, OCCURRED, user, user, ext, math.floor(cents / 100), cents % 100, u % 100)
end

-- The fixed event k of seed and replay: the same body every time.
local function fixed_event(k)
   return event(prefix .. "-" .. k, k % users, 100 + (k * 7919) % 50000)
end

local seq = 0
local function new_event(u)
   seq = seq + 1
   return event(string.format("%s-%d-%d", nonce, tid, seq),
                u or math.random(0, users - 1), math.random(100, 50099))
end

local function batch(list)
   return wrk.format("POST", "/v1/cdp/events/batch", headers,
                     '{"items":[' .. table.concat(list, ",") .. ']}')
end

local chunks = {}
local stopped = false

function init(args)
   tid = tid or 0
   math.randomseed(os.time() + 7919 * tid + #nonce)
   math.random(); math.random()
   n_acc, n_dup, n_err, n_resp, n_items = 0, 0, 0, 0, 0
   if mode == "seed" then
      -- this thread's share: chunks tid, tid + nthreads, ...
      local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
      local c = tid
      while c * items < count do
         table.insert(chunks, c)
         c = c + nthreads
      end
   end
end

local function mark_done()
   if stopped then return end
   stopped = true
   if markdir then
      local f = io.open(markdir .. "/done-" .. tid, "w")
      if f then f:write("done\n"); f:close() end
   end
   wrk.thread:stop()
end

function request()
   if mode == "single" then
      n_items = n_items + 1
      return wrk.format("POST", "/v1/cdp/events", headers, new_event())
   elseif mode == "batch" then
      local us, list = {}, {}
      for i = 1, items do us[i] = math.random(0, users - 1) end
      if sorted then table.sort(us) end
      for i = 1, items do list[i] = new_event(us[i]) end
      n_items = n_items + items
      return batch(list)
   elseif mode == "replay" then
      n_items = n_items + 1
      return wrk.format("POST", "/v1/cdp/events", headers,
                        fixed_event(math.random(0, count - 1)))
   elseif mode == "seed" then
      -- One connection per thread: request k follows response k - 1, so
      -- the count of responses says which chunk is next (wrk also calls
      -- request() once before the run, to check it). After this thread's
      -- last chunk (or without any), a health check until the stop.
      local c = chunks[n_resp + 1]
      if c == nil then
         return wrk.format("GET", "/v1/health")
      end
      local list = {}
      for k = c * items, math.min(count, (c + 1) * items) - 1 do
         list[#list + 1] = fixed_event(k)
      end
      n_items = n_items + #list
      return batch(list)
   end
   error("unknown BENCH_MODE " .. mode)
end

local function count_of(body, what)
   local _, n = string.gsub(body, '"status":"' .. what .. '"', "")
   return n
end

function response(status, hdrs, body)
   n_resp = n_resp + 1
   if mode == "batch" or mode == "seed" then
      if status == 200 then
         n_acc = n_acc + count_of(body, "accepted")
         n_dup = n_dup + count_of(body, "duplicate")
         n_err = n_err + count_of(body, "error")
      else
         n_err = n_err + 1
      end
   elseif status == 201 then
      n_acc = n_acc + 1
   elseif status == 200 then
      n_dup = n_dup + 1
   else
      n_err = n_err + 1
   end
   if (mode == "seed" and n_resp >= #chunks) or (quota > 0 and n_resp >= quota) then
      mark_done()
   end
end

-- ---------------------------------------------------------------- done, main thread

function done(summary, latency, requests)
   local acc, dup, err, it = 0, 0, 0, 0
   for _, t in ipairs(threads) do
      acc = acc + (t:get("n_acc") or 0)
      dup = dup + (t:get("n_dup") or 0)
      err = err + (t:get("n_err") or 0)
      it  = it + (t:get("n_items") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d items=%d accepted=%d" ..
      " duplicate=%d item_errors=%d http_errors=%d socket_errors=%d\n",
      summary.requests, summary.duration, latency:percentile(50),
      latency:percentile(99), it, acc, dup, err, e.status,
      e.connect + e.read + e.write + e.timeout))
end
