-- Argo CD health check of modeldepot.dev/ModelArtifact.
-- argocd-cm: resource.customizations.health.modeldepot.dev_ModelArtifact (docs/gitops.md).
--   Healthy      Ready=True, observed for the current generation (the files are verified and published)
--   Degraded     Stalled=True (a failure that needs a spec or cluster change; the reason is in the message)
--   Suspended    phase Suspended (spec.suspend with no verified copy yet)
--   Progressing  anything else: no status yet, a generation the operator has not observed, Pending,
--                Downloading, Deleting
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}
if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Deleting: cancelling downloads and cleaning up"
  return hs
end
if obj.status == nil then
  return hs
end
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and obj.status.observedGeneration ~= generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

-- a condition stamped with an older generation says nothing about the current spec
local function current(c)
  return generation == nil or c.observedGeneration == nil or c.observedGeneration == generation
end
local function describe(c, fallback)
  local text = fallback
  if c.message ~= nil and c.message ~= "" then
    text = c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    text = c.reason .. ": " .. text
  end
  return text
end

local ready = nil
local stalled = nil
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" and current(c) then
      ready = c
    elseif c.type == "Stalled" and current(c) then
      stalled = c
    end
  end
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Failed")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Verified")
  return hs
end
if obj.status.phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = "Suspended"
  if ready ~= nil then
    hs.message = describe(ready, "Suspended")
  end
  return hs
end
if obj.status.progress ~= nil and obj.status.progress.summary ~= nil and obj.status.progress.summary ~= "" then
  hs.message = obj.status.progress.summary
elseif ready ~= nil then
  hs.message = describe(ready, obj.status.phase or "Progressing")
elseif obj.status.phase ~= nil then
  hs.message = obj.status.phase
end
return hs
