-- Argo CD health of Toolshare's kinds (toolshare.dev/v1alpha1), from their Ready condition.
-- One script for ToolRun, RunShare and ImageShare (argocd-cm maps each kind to it):
--   Healthy      Ready=True (Reconciled, Active, Claimed)
--   Suspended    a RunShare that has Expired: nothing is wrong, it just opens nothing any more
--   Degraded     Ready=False for any other reason (InvalidSpec, FriendlyNameConflict, ApplyFailed,
--                RunNotFound, Invalid, ClaimedByOther); the message says why
--   Progressing  no status yet, or the operator has not seen this generation (ToolRuns and
--                ImageShares record observedGeneration; a RunShare's status is written only when
--                its verdict changes, so its health is its last verdict)
local hs = {status = "Progressing", message = "Waiting for the Toolshare operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    local seen = c.observedGeneration or obj.status.observedGeneration
    if seen ~= nil and generation ~= nil and seen < generation then
      hs.message = "Waiting for the operator to see generation " .. generation
      return hs
    end
    if c.status == "True" then
      hs.status = "Healthy"
    elseif obj.kind == "RunShare" and c.reason == "Expired" then
      hs.status = "Suspended"
    elseif c.status == "False" then
      hs.status = "Degraded"
    end
    hs.message = (c.reason or "") .. ": " .. (c.message or "")
    return hs
  end
end
return hs
