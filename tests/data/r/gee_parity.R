# R reference for cohortflow's GEE layer (tests/test_analysis_gee_parity.py): marginal probabilities/rates with
# CIs on the link scale back-transformed, risk/mean differences with delta-method SEs, link-scale contrasts.
# Input: lmm_dataset.csv (made by make_fixtures.py); derived responses
#   above = score >= 30 (binary), count = floor(max(score - 20, 0) / 4) (count).
# Run:   Rscript gee_parity.R <this folder>   (R 4.2.2, geepack 1.3.9, emmeans 1.8.4-1 here)
# Output: gee_<family>_<corstr>_{coef,emmeans,contrasts,link}.csv for family binomial (above) and poisson
#   (count), working correlation independence and exchangeable, clusters = households, robust (sandwich) SEs.
suppressPackageStartupMessages({library(geepack); library(emmeans)})
args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args)) args[1] else "."
d <- read.csv(file.path(dir, "lmm_dataset.csv"), stringsAsFactors = FALSE)
d$above <- as.integer(d$score >= 30)
d$count <- floor(pmax(d$score - 20, 0) / 4)
arms <- c("proeftuin", "vt", "gi"); waves <- c("T0", "T1", "T2")
d$arm <- factor(d$arm, levels = arms)
d$wave <- factor(d$wave, levels = waves)
d$sex <- factor(d$sex)
d <- d[order(d$household_id, d$person_id, d$wave), ]
d$hh <- as.integer(factor(d$household_id, levels = unique(d$household_id)))
out <- function(x, name) write.csv(x, file.path(dir, name), row.names = FALSE)
versions <- sprintf("R %s; geepack %s; emmeans %s", getRversion(), packageVersion("geepack"),
                    packageVersion("emmeans"))
for (fam in c("binomial", "poisson")) for (cs in c("independence", "exchangeable")) {
  f <- if (fam == "binomial") above ~ arm * wave + age_years + sex else count ~ arm * wave + age_years + sex
  m <- geeglm(f, id = hh, data = d, family = fam, corstr = cs, std.err = "san.se")
  co <- summary(m)$coefficients
  out(data.frame(term = rownames(co), estimate = co[, 1], se = co[, 2],
                 alpha = if (cs == "exchangeable") summary(m)$corr[1, 1] else 0, versions = versions),
      sprintf("gee_%s_%s_coef.csv", fam, cs))
  emm <- emmeans(m, ~ arm * wave)
  s <- summary(emm, type = "response")
  resp <- if (fam == "binomial") s$prob else s$rate
  out(data.frame(arm = s$arm, wave = s$wave, emmean = resp, se = s$SE, lower = s$asymp.LCL, upper = s$asymp.UCL),
      sprintf("gee_%s_%s_emmeans.csv", fam, cs))
  grid <- paste(s$arm, s$wave)
  cell <- function(a, w) as.numeric(grid == paste(a, w))
  cons <- list()
  for (a in arms) for (w in waves[-1]) cons[[sprintf("%s: %s - %s", a, w, waves[1])]] <- cell(a, w) - cell(a, waves[1])
  for (cmp in arms[-1]) for (w in waves[-1])
    cons[[sprintf("%s - %s: change %s to %s", arms[1], cmp, waves[1], w)]] <-
      (cell(arms[1], w) - cell(arms[1], waves[1])) - (cell(cmp, w) - cell(cmp, waves[1]))
  ct <- summary(contrast(regrid(emm), method = cons, adjust = "none"), infer = c(TRUE, TRUE))
  out(data.frame(contrast = ct$contrast, estimate = ct$estimate, se = ct$SE, lower = ct$asymp.LCL,
                 upper = ct$asymp.UCL, p = ct$p.value), sprintf("gee_%s_%s_contrasts.csv", fam, cs))
  lk <- summary(contrast(emm, method = cons, adjust = "none"), infer = c(TRUE, TRUE))
  out(data.frame(contrast = lk$contrast, estimate = lk$estimate, se = lk$SE, lower = lk$asymp.LCL,
                 upper = lk$asymp.UCL), sprintf("gee_%s_%s_link.csv", fam, cs))
}

# Separation: no events in proeftuin at T2 (above set to 0 there). The cell's logit is -infinity; in the limit
# its rows drop out of the (independence) estimating equations, so the other cells' marginal probabilities are
# those of the model fitted without these rows, in cell-means coding. The reference grid keeps the mean age of
# all the outcome's rows (as cohortflow does: the grid is the outcome's, not the fit's).
s <- d
s$above[s$arm == "proeftuin" & s$wave == "T2"] <- 0L
s <- s[!(s$arm == "proeftuin" & s$wave == "T2"), ]
s$cell <- droplevels(interaction(s$arm, s$wave, sep = ":"))
m <- geeglm(above ~ 0 + cell + age_years + sex, id = hh, data = s, family = "binomial", corstr = "independence",
            std.err = "san.se")
e <- summary(emmeans(m, ~ cell, at = list(age_years = mean(d$age_years))), type = "response")
out(data.frame(cell = e$cell, emmean = e$prob, se = e$SE, lower = e$asymp.LCL, upper = e$asymp.UCL),
    "gee_separated_emmeans.csv")
