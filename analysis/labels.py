"""Words of the report in each language: table headers, notes and the plain-language reading sentences.

Arm, wave and role labels come from config/study.yaml and outcome labels from the analysis plan or the
instrument definitions; everything else a reader sees is here, one dict per language (`TEXT["nl"]`,
`TEXT["en"]`). Templates use `{placeholders}` filled with `str.format`.
"""

from __future__ import annotations

import math

LANGUAGES = ("nl", "en")

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "language_name": "English",
        "title": "Effect report: {study}",
        "subtitle": "Change per outcome in {intervention} compared with {comparisons}",
        "summary_heading": "Summary",
        "summary": (
            "This report compares how {n_outcomes} outcomes changed between {baseline} and the follow-up waves in "
            "{intervention} compared with {comparisons}. Per outcome it rests on up to {n_households} households and "
            "{n_persons} respondents at {baseline}. At the last follow-up, {n_favour} of {n_contrasts} comparisons favour "
            "{intervention} with a confidence interval that excludes no difference, {n_disfavour} favour the "
            "comparison arm, and {n_unclear} are unclear. The arms were not assigned at random: the differences "
            "are comparisons between groups of families, not proof that the approach caused them."),
        "not_randomised": ("The arms were not randomised: read every difference as 'compared with', "
                           "not as 'caused by'."),
        "table_heading": "Effect table",
        "plots_heading": "Plots",
        "forest_heading": "Standardised effects across outcomes",
        "emm_heading": "Model-adjusted means per wave",
        "outcome_heading": "Outcome",
        "appendix_link": "Technical appendix for statisticians",
        "footer_heading": "About these numbers",
        # column headers of the effect table
        "col_outcome": "Outcome",
        "col_direction": "Direction",
        "col_wave": "Follow-up",
        "col_n": "n {arm} (% of {baseline} retained)",
        "col_baseline": "Baseline mean (SD) {arm}",
        "col_baseline_pct": "Baseline % {arm}",
        "col_emm": "Adjusted mean (95% CI) {arm}",
        "col_emm_pct": "Adjusted % (95% CI) {arm}",
        "col_diff": "Difference in change {arm} vs {arm2} (95% CI)",
        "col_diff_between": "Difference at the follow-up {arm} vs {arm2} (95% CI)",
        "col_p": "p (adjusted p) {arm} vs {arm2}",
        "col_d": "Effect size d / OR / RR (95% CI) {arm} vs {arm2}",
        "col_above": "% above cut-off {arm}",
        "col_rci": "% reliably improved / deteriorated {arm}",
        "col_sens": "Multiple imputation: difference (95% CI) {arm} vs {arm2}",
        "col_reading": "Reading",
        "direction_higher_worse": "higher = worse",
        "direction_higher_better": "higher = better",
        "direction_neutral": "no direction",
        "direction_None": "no direction",
        "sens_changed": "conclusion changes",
        "sens_same": "same conclusion",
        "boot_ci": "[household bootstrap: {ci}]",
        "footer_bootstrap": "Bootstrap",
        "footer_bootstrap_text": ("{outcomes}: besides the model-based 95% CI, a percentile interval from {resamples} "
                                  "refits on households drawn with replacement (in square brackets)."),
        "suppressed": "<{threshold}",
        "not_available": "n/a",
        # units
        "unit_points": "points",
        "unit_pp": "percentage points",
        "unit_count": "times",
        "ci": "95% CI",
        "to": "to",
        "and": "and",
        # reading sentences
        "reading_better": ("{outcome}: from {baseline} to {wave}, {arm} improved more than {arm2} "
                           "(difference in change {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_worse": ("{outcome}: from {baseline} to {wave}, {arm} improved less than {arm2} "
                          "(difference in change {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_higher": ("{outcome}: from {baseline} to {wave}, scores rose more in {arm} than in {arm2} "
                           "(difference in change {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_lower": ("{outcome}: from {baseline} to {wave}, scores fell more in {arm} than in {arm2} "
                          "(difference in change {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_unclear": ("{outcome}: from {baseline} to {wave}, the change in {arm} did not differ clearly from "
                            "{arm2} (difference in change {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_between_better": ("{outcome} at {wave}: {arm} did better than {arm2} "
                                   "(difference {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_between_worse": ("{outcome} at {wave}: {arm} did worse than {arm2} "
                                  "(difference {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_between_unclear": ("{outcome} at {wave}: {arm} did not differ clearly from {arm2} "
                                    "(difference {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_between_higher": ("{outcome} at {wave}: scores were higher in {arm} than in {arm2} "
                                   "(difference {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_between_lower": ("{outcome} at {wave}: scores were lower in {arm} than in {arm2} "
                                  "(difference {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_chance_unlikely": "; the difference is unlikely to be chance ({pname} {p}).",
        "reading_chance_possible": "; the difference may well be chance ({pname} {p}).",
        "reading_chance_after_correction": ("; but after correction for the number of comparisons it may be chance "
                                            "({pname} {p})."),
        "reading_suppressed": "{outcome} at {wave}: too few respondents to report (fewer than {threshold}).",
        "p_adjusted": "adjusted p",
        "p_plain": "p",
        # footer
        "footer_model": "Model",
        "footer_design": "Design",
        "footer_small_label": "Small cells",
        "footer_software": "Software",
        "footer_snapshot": "Data snapshot",
        "footer_run": "Run id",
        "footer_generated": "Generated",
        "footer_small_cells": ("Cells based on fewer than {threshold} respondents are not shown ('<{threshold}'): "
                               "counts, means, percentages and the estimates that rest on them."),
        "footer_multiplicity": "Multiplicity",
        "footer_d": "Effect size d",
        "footer_d_text": ("d = difference in change divided by the pooled baseline SD of the two arms, "
                          "Hedges-corrected; about 0.2 is small, 0.5 medium, 0.8 large."),
        "model_lmm": ("Linear mixed model per outcome (arm x wave, adjusted for {covariates}; random intercepts "
                      "for households and persons and a random slope of time per person where the data support "
                      "it), using all available data (valid when dropout depends on what was observed). Adjusted "
                      "means and contrasts as emmeans computes them, Satterthwaite degrees of freedom."),
        "model_gee": ("Binary and count outcomes: GEE (logit link for yes/no outcomes, negative binomial for "
                      "counts) with robust standard errors, households as clusters. Yes/no outcomes: adjusted "
                      "percentages with confidence intervals computed on the log-odds scale (so they stay between "
                      "0 and 100%), differences in percentage points, odds ratios (OR). Counts: differences in "
                      "numbers, rate ratios (RR). A group with 0% (or 100%) at a wave is shown as observed with an "
                      "exact interval; comparisons involving it are not estimated."),
        "footer_definition": "Definition: {outcome}",
        "multiplicity_families": ("{method} correction within each family of comparisons: {families}. The "
                                  "adjusted p is shown in brackets; comparisons outside a family are not adjusted."),
        "multiplicity_per_outcome": ("{method} correction per outcome over its comparisons of the change; the "
                                     "adjusted p is shown in brackets."),
        "multiplicity_none": "No correction for multiple comparisons.",
        "stopped_definition": ("percentage of the respondents who reported violence at {baseline} and report none "
                               "at this follow-up; only respondents with violence at {baseline} are counted, and "
                               "the groups are compared at each follow-up (there is no starting value)."),
        "footer_mi": "Missing data",
        "footer_mi_text": ("Main analysis: all available measurements (mixed model). Check: multiple imputation "
                           "({m} imputed data sets, chained equations within each group, using the household "
                           "members' scores), pooled with Rubin's rules; the table says whether the conclusion "
                           "changes."),
        # plots
        "plot_wave": "Wave",
        "plot_emm": "Model-adjusted mean (95% CI)",
        "plot_emm_binary": "Model-adjusted % (95% CI)",
        "plot_d": "Standardised difference in change d (95% CI)",
        "plot_favours": "favours {arm}",
        "plot_vs": "{arm} vs {arm2}, {wave}",
        # notes sheet
        "notes_sheet": "Notes",
        "notes_title": "About this effect table",
        "failures": "Outcomes that could not be analysed",
        "sens_heading": "Sensitivity analyses",
    },
    "nl": {
        "language_name": "Nederlands",
        "title": "Effectrapportage: {study}",
        "subtitle": "Verandering per uitkomst in {intervention} vergeleken met {comparisons}",
        "summary_heading": "Samenvatting",
        "summary": (
            "Deze rapportage vergelijkt hoe {n_outcomes} uitkomsten veranderden tussen {baseline} en de "
            "vervolgmetingen in {intervention}, vergeleken met {comparisons}. Per uitkomst berusten de cijfers op ten hoogste "
            "{n_households} gezinnen en {n_persons} respondenten bij {baseline}. Bij de laatste vervolgmeting zijn {n_favour} van de "
            "{n_contrasts} vergelijkingen in het voordeel van {intervention} met een betrouwbaarheidsinterval dat "
            "'geen verschil' uitsluit, {n_disfavour} in het voordeel van de vergelijkingsgroep en {n_unclear} "
            "onduidelijk. De groepen zijn niet door loting samengesteld: de verschillen zijn vergelijkingen tussen "
            "groepen gezinnen, geen bewijs dat de aanpak ze veroorzaakte."),
        "not_randomised": ("De groepen zijn niet gerandomiseerd: lees elk verschil als 'vergeleken met', "
                           "niet als 'veroorzaakt door'."),
        "table_heading": "Effecttabel",
        "plots_heading": "Grafieken",
        "forest_heading": "Gestandaardiseerde effecten over de uitkomsten",
        "emm_heading": "Gecorrigeerde gemiddelden per meting",
        "outcome_heading": "Uitkomst",
        "appendix_link": "Technische bijlage voor statistici (Engels)",
        "footer_heading": "Over deze cijfers",
        "col_outcome": "Uitkomst",
        "col_direction": "Richting",
        "col_wave": "Vervolgmeting",
        "col_n": "n {arm} (% van {baseline} behouden)",
        "col_baseline": "Gemiddelde (SD) bij start {arm}",
        "col_baseline_pct": "% bij start {arm}",
        "col_emm": "Gecorrigeerd gemiddelde (95%-BI) {arm}",
        "col_emm_pct": "Gecorrigeerd % (95%-BI) {arm}",
        "col_diff": "Verschil in verandering {arm} vs {arm2} (95%-BI)",
        "col_diff_between": "Verschil bij de vervolgmeting {arm} vs {arm2} (95%-BI)",
        "col_p": "p (gecorrigeerde p) {arm} vs {arm2}",
        "col_d": "Effectgrootte d / OR / RR (95%-BI) {arm} vs {arm2}",
        "col_above": "% boven afkappunt {arm}",
        "col_rci": "% betrouwbaar verbeterd / verslechterd {arm}",
        "col_sens": "Meervoudige imputatie: verschil (95%-BI) {arm} vs {arm2}",
        "col_reading": "Betekenis",
        "direction_higher_worse": "hoger = slechter",
        "direction_higher_better": "hoger = beter",
        "direction_neutral": "geen richting",
        "direction_None": "geen richting",
        "sens_changed": "conclusie verandert",
        "sens_same": "zelfde conclusie",
        "boot_ci": "[huishoud-bootstrap: {ci}]",
        "footer_bootstrap": "Bootstrap",
        "footer_bootstrap_text": ("{outcomes}: naast het modelgebaseerde 95%-BI een percentielinterval uit {resamples} "
                                  "herschattingen op met teruglegging getrokken huishoudens (tussen rechte haken)."),
        "suppressed": "<{threshold}",
        "not_available": "n.v.t.",
        "unit_points": "punten",
        "unit_pp": "procentpunten",
        "unit_count": "keer",
        "ci": "95%-BI",
        "to": "tot",
        "and": "en",
        "reading_better": ("{outcome}: van {baseline} tot {wave} verbeterde {arm} meer dan {arm2} "
                           "(verschil in verandering {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_worse": ("{outcome}: van {baseline} tot {wave} verbeterde {arm} minder dan {arm2} "
                          "(verschil in verandering {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_higher": ("{outcome}: van {baseline} tot {wave} stegen de scores in {arm} meer dan in {arm2} "
                           "(verschil in verandering {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_lower": ("{outcome}: van {baseline} tot {wave} daalden de scores in {arm} meer dan in {arm2} "
                          "(verschil in verandering {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_unclear": ("{outcome}: van {baseline} tot {wave} verschilde de verandering in {arm} niet duidelijk "
                            "van {arm2} (verschil in verandering {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_between_better": ("{outcome} bij {wave}: {arm} deed het beter dan {arm2} "
                                   "(verschil {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_between_worse": ("{outcome} bij {wave}: {arm} deed het slechter dan {arm2} "
                                  "(verschil {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_between_unclear": ("{outcome} bij {wave}: {arm} verschilde niet duidelijk van {arm2} "
                                    "(verschil {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_between_higher": ("{outcome} bij {wave}: de scores waren hoger in {arm} dan in {arm2} "
                                   "(verschil {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_between_lower": ("{outcome} bij {wave}: de scores waren lager in {arm} dan in {arm2} "
                                  "(verschil {est} {unit}, {ci} {lo} {to} {hi})"),
        "reading_chance_unlikely": "; het verschil berust waarschijnlijk niet op toeval ({pname} {p}).",
        "reading_chance_possible": "; het verschil kan goed op toeval berusten ({pname} {p}).",
        "reading_chance_after_correction": ("; maar na correctie voor het aantal vergelijkingen kan het op toeval "
                                            "berusten ({pname} {p})."),
        "reading_suppressed": "{outcome} bij {wave}: te weinig respondenten om te rapporteren (minder dan {threshold}).",
        "p_adjusted": "gecorrigeerde p",
        "p_plain": "p",
        "footer_model": "Model",
        "footer_design": "Opzet",
        "footer_small_label": "Kleine aantallen",
        "footer_software": "Software",
        "footer_snapshot": "Datamoment (snapshot)",
        "footer_run": "Run-id",
        "footer_generated": "Gemaakt op",
        "footer_small_cells": ("Cellen die op minder dan {threshold} respondenten berusten worden niet getoond "
                               "('<{threshold}'): aantallen, gemiddelden, percentages en de schattingen die erop "
                               "berusten."),
        "footer_multiplicity": "Meervoudig toetsen",
        "footer_d": "Effectgrootte d",
        "footer_d_text": ("d = verschil in verandering gedeeld door de gepoolde SD bij de start van de twee groepen, "
                          "met Hedges-correctie; ongeveer 0,2 is klein, 0,5 middelgroot, 0,8 groot."),
        "model_lmm": ("Lineair mixed model per uitkomst (groep x meting, gecorrigeerd voor {covariates}; random "
                      "intercepts voor gezinnen en personen en een random helling over de tijd per persoon waar de "
                      "gegevens dat toelaten), met alle beschikbare gegevens (geldig als uitval samenhangt met wat "
                      "gemeten is). Gecorrigeerde gemiddelden en contrasten zoals emmeans ze berekent, "
                      "Satterthwaite-vrijheidsgraden."),
        "model_gee": ("Binaire en teluitkomsten: GEE (logit-link voor ja/nee-uitkomsten, negatief binomiaal voor "
                      "aantallen) met robuuste standaardfouten, gezinnen als clusters. Ja/nee-uitkomsten: "
                      "gecorrigeerde percentages met betrouwbaarheidsintervallen berekend op de log-odds-schaal "
                      "(zodat ze tussen 0 en 100% blijven), verschillen in procentpunten, odds ratio's (OR). "
                      "Aantallen: verschillen in aantallen, rate ratio's (RR). Een groep met 0% (of 100%) bij een "
                      "meting staat er zoals waargenomen, met een exact interval; vergelijkingen met die groep "
                      "worden niet geschat."),
        "footer_definition": "Definitie: {outcome}",
        "multiplicity_families": ("{method}-correctie binnen elke familie van vergelijkingen: {families}. De "
                                  "gecorrigeerde p staat tussen haakjes; vergelijkingen buiten een familie zijn niet "
                                  "gecorrigeerd."),
        "multiplicity_per_outcome": ("{method}-correctie per uitkomst over de vergelijkingen van de verandering; de "
                                     "gecorrigeerde p staat tussen haakjes."),
        "multiplicity_none": "Geen correctie voor meervoudig toetsen.",
        "stopped_definition": ("percentage van de respondenten die bij {baseline} geweld meldden en bij deze meting "
                               "geen geweld meer melden; alleen respondenten met geweld bij {baseline} tellen mee, "
                               "en de groepen worden per vervolgmeting vergeleken (er is geen startwaarde)."),
        "footer_mi": "Ontbrekende gegevens",
        "footer_mi_text": ("Hoofdanalyse: alle beschikbare metingen (mixed model). Controle: meervoudige imputatie "
                           "({m} aangevulde datasets, chained equations binnen elke groep, met de scores van de "
                           "gezinsleden), gepoold met de regels van Rubin; de tabel vermeldt of de conclusie "
                           "verandert."),
        "plot_wave": "Meting",
        "plot_emm": "Gecorrigeerd gemiddelde (95%-BI)",
        "plot_emm_binary": "Gecorrigeerd % (95%-BI)",
        "plot_d": "Gestandaardiseerd verschil in verandering d (95%-BI)",
        "plot_favours": "in het voordeel van {arm}",
        "plot_vs": "{arm} vs {arm2}, {wave}",
        "notes_sheet": "Toelichting",
        "notes_title": "Over deze effecttabel",
        "failures": "Uitkomsten die niet geanalyseerd konden worden",
        "sens_heading": "Gevoeligheidsanalyses",
    },
}


def text(lang: str, key: str, **values: object) -> str:
    """The `key` sentence in `lang` with `{placeholders}` filled; an unknown language is an error."""
    if lang not in TEXT:
        raise KeyError(f"unknown report language {lang!r}; known {sorted(TEXT)} (analysis/labels.py)")
    return TEXT[lang][key].format(**values)


def fmt_number(x: float | None, lang: str, digits: int = 1) -> str:
    """A number for readers: fixed digits, a real minus sign, decimal comma in Dutch; NaN gives ''."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    s = f"{x:.{digits}f}"
    if s.lstrip("-").strip("0.") == "":
        s = s.lstrip("-")  # no "-0.0"
    s = s.replace("-", "\u2212")
    return s.replace(".", ",") if lang == "nl" else s


def join_words(words: list[str], lang: str) -> str:
    """'a, b and c' in `lang`."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + f" {text(lang, 'and')} " + words[-1]


def fmt_p(p: float | None, lang: str) -> str:
    """A p-value as journals print it: three decimals, '<0.001' below that."""
    if p is None or not math.isfinite(p):
        return ""
    s = "<0.001" if p < 0.001 else f"{p:.3f}"
    return s.replace(".", ",") if lang == "nl" else s
