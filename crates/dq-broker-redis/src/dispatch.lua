-- dq's Redis dispatch script.
--
-- Python Dramatiq workers run their own script on the same keys; this one is written from the
-- semantics in WIRE.md section 2 and must have the same effect on every key, per message id, so
-- that workers of both languages can share a queue. It differs only where that is invisible to
-- Dramatiq: ids are batched (many per call), settling (ack, nack, requeue) is one command, and
-- whenever ids are added to a queue it PUBLISHes on an extra channel that dq consumers listen to
-- so they need not poll.
--
-- KEYS[1] = namespace
-- ARGV    = command, now_ms, queue, broker_id, heartbeat_timeout, dead_message_ttl,
--           maintenance ("1" or "0"), max_unpack, command arguments...
--
-- Keys (ns = namespace, Q = queue, q = Q without a trailing ".DQ"):
--   ns:Q                        list of ids, pushed at the tail, popped at the head
--   ns:Q.msgs                   hash id -> body
--   ns:q.XQ, ns:q.XQ.msgs       dead letters: zset id -> dead-lettered at, hash id -> body
--   ns:__acks__.<broker>.<Q>    set of ids fetched by that broker and not yet settled
--   ns:__heartbeats__           zset broker id -> time of its last call
--   ns:__dq_schedules__:<name>  hash of a periodic schedule: tick (the latest claimed, ms),
--                               state (JSON for tools), busy (message id), busy_until (ms)
--   ns:__dq_schedules__         zset schedule name -> when its hash expires (ms)
--   ns:__dq_unique__:<q>:<key>  string: the message_id holding unique lock <key> of queue q,
--                               expiring with the lock's TTL
--   ns:__dq_replaced__:<q>:<id> string: the message_id of the debounced message that replaced
--                               message <id> of queue q, which is to be skipped

local ns = KEYS[1]
local command = ARGV[1]
local now_arg = ARGV[2]
local now = tonumber(now_arg)
local queue = ARGV[3]
local me = ARGV[4]
local heartbeat_timeout = tonumber(ARGV[5])
local dead_message_ttl = tonumber(ARGV[6])
local maintenance = ARGV[7]
local max_unpack = tonumber(ARGV[8])
local FIRST = 9

local unpack = table.unpack or unpack

local heartbeats = ns .. ':__heartbeats__'
-- Every call is a heartbeat: a broker that is fetching or settling is alive.
redis.call('zadd', heartbeats, now_arg, me)

local canonical = queue
if string.sub(queue, -3) == '.DQ' then
    -- Dead letters of a delay queue go to the canonical queue's XQ: there is no q.DQ.XQ.
    canonical = string.sub(queue, 1, -4)
end

local list = ns .. ':' .. queue
local msgs = list .. '.msgs'
local xq = ns .. ':' .. canonical .. '.XQ'
local xq_msgs = xq .. '.msgs'
local acks_prefix = ns .. ':__acks__.'
local my_acks = acks_prefix .. me .. '.' .. queue
local channel = ns .. ':__dq_notify__.' .. queue

-- Calls `cmd key items[from..to]`, in slices small enough for Lua's C stack.
local function call_sliced(cmd, key, items, from, to)
    local i = from
    while i <= to do
        local j = math.min(i + max_unpack - 1, to)
        redis.call(cmd, key, unpack(items, i, j))
        i = j + 1
    end
end

-- KEYS takes a glob; a namespace may contain glob characters.
local function glob_escape(s)
    return (string.gsub(s, '([%*%?%[%]\\])', '\\%1'))
end

local function announce(count)
    if count > 0 then
        redis.call('publish', channel, count)
    end
end

-- Gives the unsettled ids of dead brokers back to this queue, forgets brokers that hold
-- nothing any more, and drops dead letters older than the TTL.
local function maintain()
    local recovered = 0
    local dead = redis.call('zrangebyscore', heartbeats, 0, now - heartbeat_timeout)
    for _, broker in ipairs(dead) do
        local prefix = acks_prefix .. broker
        local held = prefix .. '.' .. queue
        local ids = redis.call('smembers', held)
        if #ids > 0 then
            for _, id in ipairs(ids) do
                -- An id whose body is gone was settled elsewhere: pushing it would only make
                -- a ghost entry.
                if redis.call('hexists', msgs, id) == 1 then
                    redis.call('rpush', list, id)
                    recovered = recovered + 1
                end
            end
            redis.call('del', held)
        end
        if #redis.call('keys', glob_escape(prefix) .. '*') == 0 then
            redis.call('zrem', heartbeats, broker)
        end
    end
    local expired = redis.call('zrangebyscore', xq, 0, now - dead_message_ttl)
    call_sliced('zrem', xq, expired, 1, #expired)
    call_sliced('hdel', xq_msgs, expired, 1, #expired)
    announce(recovered)
end

if maintenance == '1' then
    maintain()
end

-- Unique messages: pushes one message onto this queue, for enqueue_unique.
local function unique_push(id, body)
    redis.call('hset', msgs, id, body)
    redis.call('rpush', list, id)
    announce(1)
end

if command == 'enqueue' then
    -- ARGV[FIRST..]: id1, body1, id2, body2, ...
    local last = #ARGV
    local pairs_per_call = math.max(1, math.floor(max_unpack / 2))
    local i = FIRST
    while i < last do
        local j = math.min(i + 2 * pairs_per_call - 1, last)
        redis.call('hset', msgs, unpack(ARGV, i, j))
        local ids = {}
        for k = i, j, 2 do
            ids[#ids + 1] = ARGV[k]
        end
        redis.call('rpush', list, unpack(ids))
        i = j + 1
    end
    announce((last - FIRST + 1) / 2)
    return (last - FIRST + 1) / 2

elseif command == 'enqueue_tick' then
    -- ARGV[FIRST..]: schedule name, tick (ms), id, body, state JSON, no_overlap ("1"/"0"),
    -- busy ttl (ms), record ttl (ms), message_id. The claim of the tick and the enqueue of its
    -- message are this one script: a tick is enqueued once, or not at all.
    local name = ARGV[FIRST]
    local tick = tonumber(ARGV[FIRST + 1])
    local id, body, state = ARGV[FIRST + 2], ARGV[FIRST + 3], ARGV[FIRST + 4]
    local no_overlap = ARGV[FIRST + 5] == '1'
    local busy_ttl, record_ttl = tonumber(ARGV[FIRST + 6]), tonumber(ARGV[FIRST + 7])
    local message_id = ARGV[FIRST + 8]
    local index = ns .. ':__dq_schedules__'
    local key = index .. ':' .. name
    local last = tonumber(redis.call('hget', key, 'tick') or '')
    if last and last >= tick then
        return {'taken'}
    end
    redis.call('hset', key, 'tick', ARGV[FIRST + 1])
    redis.call('pexpire', key, record_ttl)
    redis.call('zadd', index, now + record_ttl, name)
    if no_overlap then
        local busy = redis.call('hget', key, 'busy')
        if busy and tonumber(redis.call('hget', key, 'busy_until') or '0') > now then
            return {'busy', busy}
        end
    end
    redis.call('hset', msgs, id, body)
    redis.call('rpush', list, id)
    announce(1)
    redis.call('hset', key, 'state', state)
    if no_overlap then
        redis.call('hset', key, 'busy', message_id, 'busy_until', now + busy_ttl)
    else
        redis.call('hdel', key, 'busy', 'busy_until')
    end
    return {'enqueued'}

-- ---- unique messages: enqueue_unique, release_unique ----------------------------------------
elseif command == 'enqueue_unique' then
    -- ARGV[FIRST..]: key, message_id, ttl (ms), mode ("unique", "throttle", "debounce"), id,
    -- body. Taking the lock and pushing the message are this one script: never a lock without
    -- its message, nor a message past a held lock. A debounce takes the key from its holder,
    -- which the worker then skips when it comes up (its key holds a newer id).
    local lock = ns .. ':__dq_unique__:' .. canonical .. ':' .. ARGV[FIRST]
    local message_id = ARGV[FIRST + 1]
    local ttl, mode = ARGV[FIRST + 2], ARGV[FIRST + 3]
    local holder = redis.call('get', lock)
    if holder and (mode ~= 'debounce' or holder == message_id) then
        return {'duplicate', holder}
    end
    if holder then
        -- The replaced message is remembered as long as its own lock would have lived (it
        -- covered its delay), or this one's, whichever is longer: it is skipped when it comes
        -- up, even after this one has started and released the key.
        local mark_ttl = math.max(redis.call('pttl', lock), tonumber(ttl))
        redis.call('set', ns .. ':__dq_replaced__:' .. canonical .. ':' .. holder, message_id,
            'px', mark_ttl)
    end
    redis.call('set', lock, message_id, 'px', ttl)
    unique_push(ARGV[FIRST + 4], ARGV[FIRST + 5])
    if holder then
        return {'replaced', holder}
    end
    return {'enqueued'}

elseif command == 'release_unique' then
    -- ARGV[FIRST..]: key, message_id; queue = the canonical queue. Compare and delete.
    local lock = ns .. ':__dq_unique__:' .. canonical .. ':' .. ARGV[FIRST]
    local newer = redis.call('get', ns .. ':__dq_replaced__:' .. canonical .. ':' .. ARGV[FIRST + 1])
    if newer then
        return {'replaced', newer}
    end
    local holder = redis.call('get', lock)
    if not holder then
        return {'absent'}
    end
    if holder == ARGV[FIRST + 1] then
        redis.call('del', lock)
        return {'released'}
    end
    return {'held', holder}
-- ---- end of unique messages -------------------------------------------------------------------

elseif command == 'release_tick' then
    -- ARGV[FIRST..]: schedule name, message_id. Compare and delete.
    local key = ns .. ':__dq_schedules__:' .. ARGV[FIRST]
    if redis.call('hget', key, 'busy') == ARGV[FIRST + 1] then
        redis.call('hdel', key, 'busy', 'busy_until')
        return 1
    end
    return 0

elseif command == 'fetch' then
    -- ARGV[FIRST]: how many. Returns id1, body1, id2, body2, ... where a body may be nil: the
    -- id is then held in the ack set all the same, as Dramatiq does.
    local n = math.min(tonumber(ARGV[FIRST]), max_unpack)
    -- One LPOP with a count (Redis 6.2+) instead of one per id; older servers reject the count
    -- and get the loop.
    local ids = redis.pcall('lpop', list, n)
    if type(ids) == 'table' and ids.err then
        ids = {}
        for i = 1, n do
            local id = redis.call('lpop', list)
            if not id then
                break
            end
            ids[i] = id
        end
    elseif not ids then
        ids = {}
    end
    if #ids == 0 then
        return {}
    end
    redis.call('sadd', my_acks, unpack(ids))
    local bodies = redis.call('hmget', msgs, unpack(ids))
    local out = {}
    for i = 1, #ids do
        out[2 * i - 1] = ids[i]
        out[2 * i] = bodies[i]
    end
    return out

elseif command == 'settle' then
    -- ARGV[FIRST]: number of acks, ARGV[FIRST+1]: number of nacks, then the acked ids, the
    -- nacked ids, and the ids to requeue. Only ids in this broker's ack set are touched, each
    -- exactly as Dramatiq's ack, nack and requeue would.
    local n_ack = tonumber(ARGV[FIRST])
    local n_nack = tonumber(ARGV[FIRST + 1])
    local i = FIRST + 2
    local acked, nacked, requeued = 0, 0, 0
    -- Acks: which of the ids this broker holds, by one SMISMEMBER (Redis 6.2+) per slice, then
    -- one SREM and one HDEL for those; older servers get the per-id SREM / HDEL.
    local last_ack = i + n_ack - 1
    while i <= last_ack do
        local j = math.min(i + max_unpack - 1, last_ack)
        local held = redis.pcall('smismember', my_acks, unpack(ARGV, i, j))
        if type(held) == 'table' and held.err == nil then
            local mine = {}
            for k = i, j do
                if held[k - i + 1] == 1 then
                    mine[#mine + 1] = ARGV[k]
                end
            end
            if #mine > 0 then
                redis.call('srem', my_acks, unpack(mine))
                redis.call('hdel', msgs, unpack(mine))
            end
            acked = acked + #mine
        else
            for k = i, j do
                if redis.call('srem', my_acks, ARGV[k]) == 1 then
                    redis.call('hdel', msgs, ARGV[k])
                    acked = acked + 1
                end
            end
        end
        i = j + 1
    end
    for _ = 1, n_nack do
        local id = ARGV[i]
        i = i + 1
        if redis.call('srem', my_acks, id) == 1 then
            local body = redis.call('hget', msgs, id)
            if body then
                redis.call('zadd', xq, now_arg, id)
                redis.call('hset', xq_msgs, id, body)
                redis.call('hdel', msgs, id)
                nacked = nacked + 1
            end
        end
    end
    while i <= #ARGV do
        local id = ARGV[i]
        i = i + 1
        if redis.call('srem', my_acks, id) == 1 and redis.call('hexists', msgs, id) == 1 then
            redis.call('rpush', list, id)
            requeued = requeued + 1
        end
    end
    announce(requeued)
    return {acked, nacked, requeued}

elseif command == 'purge' then
    redis.call('del', list, my_acks, msgs, xq, xq_msgs)
    return 1

end

return redis.error_reply('dq dispatch: unknown command ' .. tostring(command))
